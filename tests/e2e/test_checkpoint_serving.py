"""Fine-tuned Hugging Face checkpoints served end to end (`--checkpoint`, converted once)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from checkpoint_models import build_multilingual
from support import (
    Server,
    audio_root,
    librispeech_clips,
    load_audio,
    recv_json,
    session,
    start_server,
    stream,
    transcribe_clip,
    transcripts,
    wer,
)

pytest.importorskip("transformers", reason="needs the hf extra: pip install 'whisperwire[hf]'")
safetensors_torch = pytest.importorskip("safetensors.torch")
torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ct2-cache")


def streamed_wer(server: Server, n: int = 10) -> float:
    clips = librispeech_clips(n)
    texts = [stream(server.url, load_audio(path)).text for path, _ in clips]
    return wer([ref for _, ref in clips], texts)


def clip_wer(server: Server, n: int = 10) -> float:
    clips = librispeech_clips(n)
    with session(server.url) as ws:
        recv_json(ws)
        texts = [
            transcribe_clip(ws, path.read_bytes(), f"clip-{i}")["transcription"]
            for i, (path, _) in enumerate(clips)
        ]
    return wer([ref for _, ref in clips], texts)


def serve_checkpoint(tmp: Path, checkpoint: Path, cache: Path, *args: str) -> Server:
    return start_server(tmp, "--checkpoint", str(checkpoint), "--cache-dir", str(cache), *args)


def jfk_wer(server: Server) -> float:
    result = stream(server.url, load_audio(audio_root() / "jfk" / "jfk.flac"))
    return wer([transcripts("jfk")["jfk.flac"]], [result.text])


def test_safetensors_checkpoint_streams_like_the_bundled_model(
    tiny_en_hf: Path, cache: Path, server: Server, tmp_path: Path
) -> None:
    """`server` runs the bundled model (tests/e2e/conftest.py)."""
    converted = serve_checkpoint(tmp_path, tiny_en_hf, cache)
    try:
        assert "converting" in converted.output().lower()
        checkpoint, stock = streamed_wer(converted), streamed_wer(server)
        print(f"streaming WER: checkpoint {checkpoint:.4f}, bundled {stock:.4f}")
        assert abs(checkpoint - stock) <= 0.01
        checkpoint, stock = clip_wer(converted), clip_wer(server)
        print(f"clip WER: checkpoint {checkpoint:.4f}, bundled {stock:.4f}")
        assert abs(checkpoint - stock) <= 0.01
    finally:
        converted.stop()
    again = serve_checkpoint(tmp_path, tiny_en_hf, cache)  # the cache is reused
    try:
        assert "converting" not in again.output().lower(), again.output()
        assert jfk_wer(again) <= 0.1
    finally:
        again.stop()


def test_pytorch_bin_and_sharded_checkpoints_are_served(
    tiny_en_hf: Path, cache: Path, tmp_path: Path
) -> None:
    state = safetensors_torch.load_file(str(tiny_en_hf / "model.safetensors"))
    names = sorted(state)
    layouts = {"bin": tmp_path / "bin", "sharded": tmp_path / "sharded"}
    for folder in layouts.values():
        folder.mkdir()
        for file in tiny_en_hf.iterdir():
            if file.name != "model.safetensors":
                (folder / file.name).write_bytes(file.read_bytes())
    torch.save(state, layouts["bin"] / "pytorch_model.bin")
    halves = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2 :]}  # fmt: skip
    index = {"metadata": {}, "weight_map": {}}
    for shard, keys in halves.items():
        safetensors_torch.save_file({k: state[k] for k in keys}, str(layouts["sharded"] / shard))
        index["weight_map"].update(dict.fromkeys(keys, shard))
    (layouts["sharded"] / "model.safetensors.index.json").write_text(json.dumps(index))
    for name, folder in layouts.items():
        server = start_server(
            tmp_path, "-m", str(folder), "--cache-dir", str(cache)
        )  # -m DIR takes a checkpoint as well as --checkpoint
        try:
            assert jfk_wer(server) <= 0.1, name
        finally:
            server.stop()


def test_random_multilingual_checkpoint_forced_and_auto_language(
    tiny_en_hf: Path, cache: Path, tmp_path: Path
) -> None:
    model = build_multilingual(tmp_path / "multi", tiny_en_hf)
    path = audio_root() / "librispeech_test_other" / "1688-142285-0000.flac"
    speech = load_audio(path)[: 16000 * 4]  # random weights: the text is noise, keep it short
    # `-l de` on the command line; `yue` (a code large-v3's tokenizer added) for one session.
    cases = [(("-l", "de"), "", "de"), (("-l", "de"), "language=yue", "yue"), ((), "", None)]
    for args, query, expected in cases:
        server = serve_checkpoint(tmp_path, model, cache, "-bs", "1", *args)
        try:
            result = stream(server.url, speech, query=query)
            assert result.messages[0]["config"]["language"] == (expected or "auto")
            assert result.messages[-1]["type"] == "end"  # any text, no crash
            languages = {f["language"] for f in result.finals}
            if expected is not None:
                assert languages <= {expected}, languages
            else:
                assert all(isinstance(code, str) and code for code in languages)
        finally:
            server.stop()


def bad_checkpoint(kind: str, tiny_en_hf: Path, root: Path) -> tuple[Path, str]:
    folder = root / kind
    folder.mkdir()
    for file in tiny_en_hf.iterdir():
        if file.name != "model.safetensors":
            (folder / file.name).write_bytes(file.read_bytes())
    if kind == "truncated":
        data = (tiny_en_hf / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
        return folder, "truncated"
    if kind == "other-type":
        (folder / "model.safetensors").write_bytes((tiny_en_hf / "model.safetensors").read_bytes())
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps(dict(config, model_type="bert")))
        return folder, "bert"
    return folder, "weights"  # no weights file


@pytest.mark.parametrize("kind", ["no-weights", "truncated", "other-type", "missing"])
def test_bad_checkpoints_exit_2_with_one_line(kind: str, tiny_en_hf: Path, tmp_path: Path) -> None:
    if kind == "missing":
        folder, word = tmp_path / "nowhere", "does not exist"
    else:
        folder, word = bad_checkpoint(kind, tiny_en_hf, tmp_path)
    out = subprocess.run(
        [sys.executable, "-m", "whisperwire", "serve", "--checkpoint", str(folder),
         "--cache-dir", str(tmp_path / "cache")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert word in lines[0] and "--checkpoint" in lines[0], lines[0]
