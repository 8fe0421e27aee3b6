"""The plain server needs no Ray (`ray[serve]` is an extra): where `import ray` fails, `serve`
transcribes a stream as ever, and `serve --ray` says which extra to install."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from support import librispeech_clips, load_audio, start_server, stream, wer


def without_ray(tmp_path: Path) -> dict[str, str]:
    """An environment whose Python cannot import Ray: a `ray` package that fails first on
    the path, as a missing one does."""
    shadow = tmp_path / "no-ray" / "ray"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'ray'\", name='ray')\n"
    )
    path = [str(shadow.parent), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {"PYTHONPATH": os.pathsep.join(path)}


def test_serve_transcribes_where_ray_is_not_installed(tmp_path: Path) -> None:
    env = without_ray(tmp_path)
    ((clip, reference),) = librispeech_clips(1)
    server = start_server(tmp_path, env=env)
    try:
        result = stream(server.url, load_audio(clip))
    finally:
        server.stop()
    assert not result.errors, result.errors
    assert wer([reference], [result.text]) < 0.3, result.text
    refused = subprocess.run(
        [sys.executable, "-m", "whisperwire", "serve", "--ray"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode != 0, refused
    assert "pip install 'whisperwire[ray]'" in refused.stderr, refused.stderr
