"""whisper.cpp ggml model files served end to end (`-m FILE.bin`, converted once).

The files are written from the shared tiny.en checkpoint in whisper.cpp's layout (f16, q8_0,
q5_0; tests/ggml_models.py), checked with the real whisper.cpp (pywhispercpp), then served and
compared with the same checkpoint served directly, on ten LibriSpeech test-other clips.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from checkpoint_models import build_multilingual
from ggml_models import write_ggml
from support import (
    Server,
    audio_root,
    librispeech_clips,
    load_audio,
    start_server,
    stream,
    transcripts,
    wer,
)

pytest.importorskip("transformers", reason="needs the hf extra: pip install 'whisperwire[hf]'")
pytest.importorskip("gguf", reason="needs the test extra (gguf quantizes the test files)")

pytestmark = pytest.mark.slow

TYPES = ("f16", "q8_0", "q5_0")
# Streamed WER may differ from the checkpoint's by this much: f16 holds the same weights,
# q8_0 and q5_0 weights are dequantized (rounded) ones.
WER_MARGIN = {"f16": 0.01, "q8_0": 0.03, "q5_0": 0.03}


@pytest.fixture(scope="session")
def ggml_files(tiny_en_hf: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ggml-files")
    return {w: write_ggml(tiny_en_hf, root / f"ggml-tiny.en-{w}.bin", w) for w in TYPES}


@pytest.fixture(scope="session")
def ggml_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ggml-cache")


def streamed_wer(server: Server, n: int = 10) -> float:
    clips = librispeech_clips(n)
    texts = [stream(server.url, load_audio(path)).text for path, _ in clips]
    return wer([ref for _, ref in clips], texts)


@pytest.fixture(scope="session")
def checkpoint_wer(
    tiny_en_hf: Path, ggml_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[float]:
    """The streamed WER of the checkpoint the files come from, served directly."""
    server = start_server(
        tmp_path_factory.mktemp("checkpoint"), "-m", str(tiny_en_hf), "--cache-dir", str(ggml_cache)
    )
    try:
        yield streamed_wer(server)
    finally:
        server.stop()


@pytest.mark.parametrize("wtype", TYPES)
def test_whisper_cpp_transcribes_the_test_files(wtype: str, ggml_files: dict[str, Path]) -> None:
    """The writer is right: the real whisper.cpp loads each file and transcribes jfk."""
    whispercpp = pytest.importorskip("pywhispercpp.model", reason="needs pywhispercpp")
    model = whispercpp.Model(
        str(ggml_files[wtype]), n_threads=os.cpu_count() or 1, redirect_whispercpp_logs_to=None,
        print_progress=False, print_realtime=False,
    )  # fmt: skip
    segments = model.transcribe(load_audio(audio_root() / "jfk" / "jfk.flac"))
    text = " ".join(segment.text for segment in segments)
    score = wer([transcripts("jfk")["jfk.flac"]], [text])
    print(f"whisper.cpp {wtype}: WER {score:.4f}: {text}")
    assert score <= 0.1, text


@pytest.mark.parametrize("wtype", TYPES)
def test_ggml_file_streams_like_its_checkpoint(
    wtype: str,
    ggml_files: dict[str, Path],
    ggml_cache: Path,
    checkpoint_wer: float,
    tmp_path: Path,
) -> None:
    server = start_server(tmp_path, "-m", str(ggml_files[wtype]), "--cache-dir", str(ggml_cache))
    try:
        log = server.output()
        assert "converting ggml file" in log and "using the cached conversion" not in log, log
        score = streamed_wer(server)
    finally:
        server.stop()
    print(f"streamed WER: ggml {wtype} {score:.4f}, checkpoint {checkpoint_wer:.4f}")
    assert abs(score - checkpoint_wer) <= WER_MARGIN[wtype]
    if wtype != "f16":
        return
    again = start_server(tmp_path, "-m", str(ggml_files[wtype]), "--cache-dir", str(ggml_cache))
    try:  # the second start reuses the conversion
        log = again.output()
        assert "using the cached conversion" in log and "converting" not in log, log
        result = stream(again.url, load_audio(audio_root() / "jfk" / "jfk.flac"))
        assert wer([transcripts("jfk")["jfk.flac"]], [result.text]) <= 0.1, result.text
    finally:
        again.stop()


def test_random_multilingual_ggml_file_forced_and_session_language(
    tiny_en_hf: Path, ggml_cache: Path, tmp_path: Path
) -> None:
    """A large-v3-shaped file (128 mel bins, 100 languages) of tiny random weights, q8_0."""
    model = write_ggml(
        build_multilingual(tmp_path / "multi", tiny_en_hf), tmp_path / "m.bin", "q8_0"
    )
    path = audio_root() / "librispeech_test_other" / "1688-142285-0000.flac"
    speech = load_audio(path)[: 16000 * 4]  # random weights: the text is noise, keep it short
    server = start_server(
        tmp_path, "-m", str(model), "--cache-dir", str(ggml_cache), "-l", "de", "-bs", "1", "-nf"
    )
    try:
        for query, expected in (("", "de"), ("language=yue", "yue")):
            result = stream(server.url, speech, query=query)
            assert result.messages[0]["config"]["language"] == expected
            assert result.messages[-1]["type"] == "end"  # any text, no crash
            assert {final["language"] for final in result.finals} <= {expected}
    finally:
        server.stop()


def test_broken_ggml_file_exits_2_with_one_line(
    ggml_files: dict[str, Path], tmp_path: Path
) -> None:
    truncated = tmp_path / "truncated.bin"
    data = ggml_files["q5_0"].read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    out = subprocess.run(
        [sys.executable, "-m", "whisperwire", "serve", "-m", str(truncated),
         "--cache-dir", str(tmp_path / "cache")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert "truncated" in lines[0] and "-m/--model" in lines[0], lines[0]
