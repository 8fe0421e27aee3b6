"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support import Server, audio_root, start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server on the bundled model with default settings, one per test module; but for
    admission control (test_admission tests its default), as these tests open more sessions
    at once (up to 5) than this machine carries within the default lag."""
    audio_root()
    srv = start_server(tmp_path_factory.mktemp("server"), "--max-lag", "60")
    yield srv
    srv.stop()
