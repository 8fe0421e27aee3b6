"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import REPO, Server, audio_root, start_server

MODELS = Path(os.environ.get("WHISPERWIRE_TEST_MODELS", REPO.parent / "shared" / "models"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server on the bundled model with default settings, one per test module; but for
    admission control (test_admission tests its default), as these tests open more sessions
    at once (up to 5) than this machine carries within the default lag."""
    audio_root()
    srv = start_server(tmp_path_factory.mktemp("server"), "--max-lag", "60")
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def tiny_en_hf() -> Path:
    """The Hugging Face tiny.en checkpoint the checkpoint and ggml tests convert."""
    path = MODELS / "whisper-tiny.en-hf"
    if not (path / "model.safetensors").is_file():
        pytest.skip(f"no Hugging Face test checkpoint at {path} (set WHISPERWIRE_TEST_MODELS)")
    return path
