"""Fast tests of whisperwire.checkpoints: validation, cache, locking, file sourcing.

No real conversion here: a fake converter factory stands in for CTranslate2's Transformers
converter (the real one runs in tests/e2e/test_checkpoints.py). Checkpoints are tiny: a hand-made
safetensors file, a small tokenizer built with the ``tokenizers`` library.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import signal
import struct
import sys
import tempfile
import threading
import time
import types
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tokenizers import Tokenizer, models

from whisperwire.checkpoints import (
    MARKER,
    CheckpointError,
    check_converter_version,
    checkpoint_languages,
    default_cache_dir,
    prepare_checkpoint,
    quantization_for,
)

LANGUAGES = ("en", "de", "fr")
NOBODY = 65534

# -- helpers -----------------------------------------------------------------------------------


def write_safetensors(path: Path, tensors: dict[str, list[float]]) -> None:
    """A float32 safetensors file, written by hand (8-byte length, JSON header, raw data)."""
    header: dict[str, Any] = {}
    blobs: list[bytes] = []
    offset = 0
    for name, values in tensors.items():
        data = struct.pack(f"<{len(values)}f", *values)
        header[name] = {
            "dtype": "F32",
            "shape": [len(values)],
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


def whisper_tokenizer(languages: tuple[str, ...] = LANGUAGES) -> Tokenizer:
    """A small Whisper-like tokenizer: a few words, then Whisper's special tokens."""
    tokenizer = Tokenizer(models.WordLevel({"a": 0, "b": 1, "c": 2}, unk_token="a"))
    tokenizer.add_special_tokens(
        [
            "<|endoftext|>",
            "<|startoftranscript|>",
            *(f"<|{code}|>" for code in languages),
            "<|translate|>",
            "<|transcribe|>",
            "<|startoflm|>",
            "<|startofprev|>",
            "<|nospeech|>",
            "<|notimestamps|>",
        ]
    )
    return tokenizer


def write_tokenizer(path: Path, languages: tuple[str, ...] = LANGUAGES) -> dict[str, int]:
    """Save :func:`whisper_tokenizer` as tokenizer.json; returns its special token ids."""
    tokenizer = whisper_tokenizer(languages)
    tokenizer.save(str(path))
    return {t: i for t, i in tokenizer.get_vocab(with_added_tokens=True).items() if "|" in t}


def make_checkpoint(
    root: Path,
    *,
    weights: str = "safetensors",
    tokenizer: bool = True,
    preprocessor: bool = True,
    model_type: str = "whisper",
    mel_bins: int = 80,
) -> Path:
    root.mkdir(parents=True)
    if tokenizer:
        write_tokenizer(root / "tokenizer.json")
    config = {
        "model_type": model_type,
        "num_mel_bins": mel_bins,
        "vocab_size": 64,
        "decoder_start_token_id": whisper_tokenizer().token_to_id("<|startoftranscript|>"),
    }
    (root / "config.json").write_text(json.dumps(config))
    if preprocessor:
        (root / "preprocessor_config.json").write_text(json.dumps({"feature_size": mel_bins}))
    if weights == "safetensors":
        write_safetensors(root / "model.safetensors", {"w": [0.5] * 16, "b": [1.0] * 4})
    elif weights == "sharded":
        write_safetensors(root / "model-00001-of-00002.safetensors", {"w": [0.5] * 16})
        write_safetensors(root / "model-00002-of-00002.safetensors", {"b": [1.0] * 4})
        weight_map = {
            "w": "model-00001-of-00002.safetensors",
            "b": "model-00002-of-00002.safetensors",
        }
        (root / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    elif weights == "bin":
        with zipfile.ZipFile(root / "pytorch_model.bin", "w") as archive:
            archive.writestr("archive/data.pkl", b"\x80\x02}q\x00." + b"\0" * 4096)
    return root


class FakeConverter:
    """Converter factory standing in for TransformersConverter.

    Every conversion appends a line to ``record`` (so calls are counted across processes) and
    writes a small model directory: the staged file names, ``config.json`` with empty
    ``lang_ids`` (as the real converter writes with transformers 5) and the ``copy_files``.
    """

    def __init__(
        self,
        record: Path,
        *,
        delay: float = 0.0,
        error: Exception | None = None,
        gate: threading.Event | None = None,
    ):
        self.record = record
        self.delay = delay
        self.error = error
        self.gate = gate  # when given, a conversion waits for it (at most 30 s)

    def __call__(self, model_dir: str, copy_files: list[str] | None = None) -> Any:
        fake = self

        class Run:
            def convert(self, output_dir: str, quantization: str | None = None) -> str:
                with fake.record.open("a") as fh:
                    fh.write(f"{model_dir} {quantization}\n")
                time.sleep(fake.delay)
                if fake.gate is not None:
                    fake.gate.wait(timeout=30)
                if fake.error is not None:
                    raise fake.error
                out = Path(output_dir)
                out.mkdir()
                staged = sorted(p.name for p in Path(model_dir).iterdir())
                (out / "staged.json").write_text(json.dumps(staged))
                (out / "config.json").write_text(json.dumps({"lang_ids": []}))
                (out / "model.bin").write_bytes(b"fake model")
                for name in copy_files or []:
                    shutil.copyfile(Path(model_dir) / name, out / name)
                return output_dir

        return Run()

    @property
    def calls(self) -> int:
        return len(self.record.read_text().splitlines()) if self.record.exists() else 0


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    return make_checkpoint(tmp_path / "ckpt")


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def fake(tmp_path: Path) -> FakeConverter:
    return FakeConverter(tmp_path / "conversions.log")


def prepare(path: Path, cache: Path, converter: Any, **kwargs: Any) -> Path:
    return prepare_checkpoint(path, cache_dir=cache, converter=converter, **kwargs)


def assert_one_line_error(excinfo: pytest.ExceptionInfo[CheckpointError], *fragments: str) -> None:
    message = str(excinfo.value)
    assert message and "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


# -- small API pieces --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("compute_type", "expected"),
    [
        # Stored as float16 and quantized by CTranslate2 at load time, like the stock models.
        ("int8", "float16"),
        ("int8_float32", "float16"),
        ("int8_float16", "float16"),
        ("int16", "float16"),
        ("float16", "float16"),
        ("default", "float16"),
        ("auto", "float16"),
        ("INT8", "float16"),
        # Types wider than float16 keep their precision.
        ("float32", "float32"),
        ("bfloat16", "bfloat16"),
    ],
)
def test_quantization_for(compute_type: str, expected: str) -> None:
    assert quantization_for(compute_type) == expected


def test_quantization_for_rejects_unknown_type() -> None:
    with pytest.raises(CheckpointError) as excinfo:
        quantization_for("int4")
    assert_one_line_error(excinfo, "int4", "accepted")


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "whisperwire" / "checkpoints"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "whisperwire" / "checkpoints"


def test_checkpoint_error_is_one_line() -> None:
    assert str(CheckpointError("first\n  second\tthird")) == "first second third"


# -- bad checkpoints ---------------------------------------------------------------------------


def _missing_dir(root: Path) -> Path:
    return root / "nowhere"


def _file_not_dir(root: Path) -> Path:
    (root / "file").write_text("x")
    return root / "file"


def _no_config(root: Path) -> Path:
    ckpt = make_checkpoint(root / "c")
    (ckpt / "config.json").unlink()
    return ckpt


def _bad_json(root: Path) -> Path:
    ckpt = make_checkpoint(root / "c")
    (ckpt / "config.json").write_text("{not json")
    return ckpt


def _ct2_directory(root: Path) -> Path:
    ckpt = make_checkpoint(root / "c")
    (ckpt / "config.json").write_text(json.dumps({"lang_ids": [], "suppress_ids": []}))
    return ckpt


def _other_model_type(root: Path) -> Path:
    return make_checkpoint(root / "c", model_type="wav2vec2")


def _no_weights(root: Path) -> Path:
    return make_checkpoint(root / "c", weights="none")


def _truncated_safetensors(root: Path) -> Path:
    ckpt = make_checkpoint(root / "c")
    weights = ckpt / "model.safetensors"
    os.truncate(weights, weights.stat().st_size - 10)
    return ckpt


def _garbage_safetensors(root: Path) -> Path:
    ckpt = make_checkpoint(root / "c")
    (ckpt / "model.safetensors").write_bytes(b"<html>not found</html>")
    return ckpt


def _truncated_bin(root: Path) -> Path:
    ckpt = make_checkpoint(root / "c", weights="bin")
    weights = ckpt / "pytorch_model.bin"
    os.truncate(weights, weights.stat().st_size // 2)
    return ckpt


def _missing_shard(root: Path) -> Path:
    ckpt = make_checkpoint(root / "c", weights="sharded")
    (ckpt / "model-00002-of-00002.safetensors").unlink()
    return ckpt


def _truncated_shard(root: Path) -> Path:
    ckpt = make_checkpoint(root / "c", weights="sharded")
    os.truncate(ckpt / "model-00001-of-00002.safetensors", 40)
    return ckpt


@pytest.mark.parametrize(
    ("make_bad", "fragments"),
    [
        (_missing_dir, ("nowhere", "does not exist")),
        (_file_not_dir, ("file", "not a directory")),
        (_no_config, ("no config.json",)),
        (_bad_json, ("config.json", "not valid JSON")),
        (_ct2_directory, ("config.json has no model_type",)),
        (_other_model_type, ("'wav2vec2'", "not a Whisper model")),
        (_no_weights, ("no weights", "model.safetensors", "pytorch_model.bin")),
        (_truncated_safetensors, ("model.safetensors", "truncated")),
        (_garbage_safetensors, ("model.safetensors", "damaged")),
        (_truncated_bin, ("pytorch_model.bin", "truncated")),
        (_missing_shard, ("model-00002-of-00002.safetensors", "missing")),
        (_truncated_shard, ("model-00001-of-00002.safetensors", "truncated")),
    ],
    ids=lambda value: value.__name__.strip("_") if callable(value) else "",
)
def test_bad_checkpoint_is_reported_in_one_line(
    tmp_path: Path,
    cache: Path,
    fake: FakeConverter,
    make_bad: Callable[[Path], Path],
    fragments: tuple[str, ...],
) -> None:
    bad = make_bad(tmp_path)
    with pytest.raises(CheckpointError) as excinfo:
        prepare(bad, cache, fake)
    assert_one_line_error(excinfo, *fragments)
    assert fake.calls == 0


def _call_as_nobody(function: Callable[[], object]) -> str:
    """Run ``function`` in a forked child with uid/gid nobody; its outcome as a string."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        outcome = "ok"
        try:
            os.close(read_end)
            try:
                os.setgid(NOBODY)
                os.setuid(NOBODY)
            except OSError as exc:
                outcome = f"setuid: {exc}"
            else:
                try:
                    function()
                except CheckpointError as exc:
                    outcome = f"CheckpointError: {exc}"
                except BaseException as exc:
                    outcome = f"{type(exc).__name__}: {exc}"
            os.write(write_end, outcome.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        outcome = pipe.read().decode()
    os.waitpid(pid, 0)
    return outcome


def _outcome_without_privileges(function: Callable[[], object]) -> str:
    """``function``'s CheckpointError as a string; as root, it runs in a child that is nobody."""
    if os.geteuid() != 0:
        with pytest.raises(CheckpointError) as excinfo:
            function()
        return f"CheckpointError: {excinfo.value}"
    outcome = _call_as_nobody(function)
    if outcome.startswith("setuid:"):
        pytest.skip(f"running as root and cannot drop to nobody ({outcome})")
    return outcome


@pytest.fixture
def world_traversable_dir() -> Iterator[Path]:
    """A directory another user can reach (pytest's tmp_path lives under a 0700 directory)."""
    root = Path(tempfile.mkdtemp(prefix="whisperwire-test-"))
    root.chmod(0o755)
    yield root
    for path in [root, *root.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
    shutil.rmtree(root)


def test_unreadable_directory(world_traversable_dir: Path, fake: FakeConverter) -> None:
    """chmod 000 stops everyone but root; as root, the check runs in a child that is nobody."""
    ckpt = make_checkpoint(world_traversable_dir / "ckpt")
    ckpt.chmod(0o000)
    cache = world_traversable_dir / "cache"

    outcome = _outcome_without_privileges(lambda: prepare(ckpt, cache, fake))
    assert outcome.startswith("CheckpointError: cannot read checkpoint directory"), outcome
    assert "Permission denied" in outcome and "\n" not in outcome
    assert fake.calls == 0


def test_unreadable_weights_file(world_traversable_dir: Path, fake: FakeConverter) -> None:
    ckpt = make_checkpoint(world_traversable_dir / "ckpt")
    (ckpt / "model.safetensors").chmod(0o000)
    outcome = _outcome_without_privileges(
        lambda: prepare(ckpt, world_traversable_dir / "cache", fake)
    )
    assert outcome.startswith("CheckpointError: cannot read"), outcome
    assert "model.safetensors" in outcome


def test_read_only_cache(world_traversable_dir: Path, fake: FakeConverter) -> None:
    """A cache directory the user cannot write: the lock file is refused, in one line."""
    ckpt = make_checkpoint(world_traversable_dir / "ckpt")
    cache = world_traversable_dir / "cache"
    cache.mkdir(mode=0o555)
    outcome = _outcome_without_privileges(lambda: prepare(ckpt, cache, fake))
    assert outcome.startswith(f"CheckpointError: cannot lock {cache}/whisper-"), outcome
    assert "Permission denied" in outcome and "\n" not in outcome
    assert fake.calls == 0


def test_tokenizer_not_matching_the_model(
    checkpoint: Path, cache: Path, fake: FakeConverter
) -> None:
    config = json.loads((checkpoint / "config.json").read_text())
    config["decoder_start_token_id"] = 50258
    (checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as excinfo:
        prepare(checkpoint, cache, fake)
    assert_one_line_error(excinfo, "does not match", "decoder_start_token_id is 50258")
    assert fake.calls == 0
    assert not list(cache.glob("*.tmp-*"))


def test_preprocessor_with_wrong_mel_bins(
    checkpoint: Path, cache: Path, fake: FakeConverter
) -> None:
    (checkpoint / "preprocessor_config.json").write_text(json.dumps({"feature_size": 128}))
    with pytest.raises(CheckpointError) as excinfo:
        prepare(checkpoint, cache, fake)
    assert_one_line_error(excinfo, "feature_size 128", "num_mel_bins is 80")


# -- conversion, cache, locking ----------------------------------------------------------------


def test_converts_once_then_reuses_the_cache(
    checkpoint: Path, cache: Path, fake: FakeConverter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="whisperwire.checkpoints")
    first = prepare(checkpoint, cache, fake)
    assert fake.calls == 1
    assert (first / MARKER).is_file()
    assert (first / "tokenizer.json").is_file() and (first / "preprocessor_config.json").is_file()
    marker = json.loads((first / MARKER).read_text())
    assert marker["quantization"] == "float16" and marker["source"] == str(checkpoint.resolve())
    assert any(
        "converted" in r.getMessage() and " s into " in r.getMessage() for r in caplog.records
    )
    staged = json.loads((first / "staged.json").read_text())
    assert staged == [
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "tokenizer.json",
    ]

    second = prepare(checkpoint, cache, fake)
    assert second == first
    assert fake.calls == 1
    assert "using the cached conversion" in caplog.records[-1].getMessage()
    assert not list(cache.glob("*.tmp-*"))


def test_changed_weights_content_forces_a_new_conversion(
    checkpoint: Path, cache: Path, fake: FakeConverter
) -> None:
    weights = checkpoint / "model.safetensors"
    first = prepare(checkpoint, cache, fake)

    # A new mtime alone (same content) keeps the cache ...
    os.utime(weights, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert prepare(checkpoint, cache, fake) == first
    assert fake.calls == 1

    # ... new content with the same size and the same mtime does not.
    before = weights.stat()
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert weights.stat().st_size == before.st_size
    second = prepare(checkpoint, cache, fake)
    assert second != first
    assert fake.calls == 2
    assert (first / MARKER).is_file() and (second / MARKER).is_file()


def test_quantization_is_part_of_the_key(
    checkpoint: Path, cache: Path, fake: FakeConverter
) -> None:
    int8 = prepare(checkpoint, cache, fake, compute_type="int8")
    float32 = prepare(checkpoint, cache, fake, compute_type="float32")
    assert int8 != float32
    assert fake.calls == 2
    assert json.loads((float32 / MARKER).read_text())["quantization"] == "float32"


def test_interrupted_conversion_is_ignored_and_redone(
    checkpoint: Path, cache: Path, fake: FakeConverter
) -> None:
    target = prepare(checkpoint, cache, fake)
    # Simulate a conversion killed half-way: a work directory, and a directory without marker.
    leftover = cache / f"{target.name}.tmp-killed"
    (leftover / "model").mkdir(parents=True)
    (leftover / "model" / "model.bin").write_bytes(b"half")
    (target / MARKER).unlink()

    again = prepare(checkpoint, cache, fake)
    assert again == target
    assert fake.calls == 2
    assert (again / MARKER).is_file()
    assert not leftover.exists()


def test_conversion_killed_half_way_is_redone(
    checkpoint: Path, cache: Path, tmp_path: Path
) -> None:
    """SIGKILL a process in the middle of its conversion, then prepare again."""
    hanging = FakeConverter(tmp_path / "hanging.log", delay=60)
    context = multiprocessing.get_context("fork")
    child = context.Process(target=prepare, args=(checkpoint, cache, hanging))
    child.start()
    deadline = time.monotonic() + 30
    while hanging.calls == 0 and time.monotonic() < deadline:  # wait until it converts
        time.sleep(0.02)
    assert hanging.calls == 1
    os.kill(child.pid, signal.SIGKILL)
    child.join(timeout=10)
    assert child.exitcode == -signal.SIGKILL
    assert list(cache.glob("*.tmp-*")), "the killed conversion should have left its work dir"

    fresh = FakeConverter(tmp_path / "fresh.log")
    converted = prepare(checkpoint, cache, fresh)  # the lock died with the process
    assert fresh.calls == 1
    assert (converted / MARKER).is_file()
    assert not list(cache.glob("*.tmp-*"))


def test_failed_conversion_leaves_nothing_behind(checkpoint: Path, cache: Path) -> None:
    failing = FakeConverter(cache.parent / "failing.log", error=RuntimeError("boom\nstack"))
    with pytest.raises(CheckpointError) as excinfo:
        prepare(checkpoint, cache, failing)
    assert_one_line_error(excinfo, "converting", "failed", "RuntimeError: boom")
    assert sorted(p.suffix for p in cache.iterdir()) == [".lock"]

    working = FakeConverter(cache.parent / "working.log")
    assert (prepare(checkpoint, cache, working) / MARKER).is_file()
    assert working.calls == 1


def test_two_threads_convert_once(checkpoint: Path, cache: Path, tmp_path: Path) -> None:
    slow = FakeConverter(tmp_path / "slow.log", delay=0.5)
    results: list[Path] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(prepare(checkpoint, cache, slow))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert slow.calls == 1
    assert len(results) == 2 and results[0] == results[1]
    assert (results[0] / MARKER).is_file()


def test_a_second_caller_waits_for_the_running_conversion_and_reuses_it(
    checkpoint: Path, cache: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="whisperwire.checkpoints")
    gate = threading.Event()
    gated = FakeConverter(tmp_path / "gated.log", gate=gate)
    results: dict[str, Path] = {}

    def work(name: str) -> None:
        results[name] = prepare(checkpoint, cache, gated)

    def logged(fragment: str) -> bool:
        return any(fragment in record.getMessage() for record in caplog.records)

    first = threading.Thread(target=work, args=("first",), daemon=True)
    first.start()
    deadline = time.monotonic() + 30
    while gated.calls == 0 and time.monotonic() < deadline:  # the first one converts
        time.sleep(0.02)
    second = threading.Thread(target=work, args=("second",), daemon=True)
    second.start()
    while not logged("waiting for it") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert logged("another process is converting this checkpoint; waiting for it")
    assert not gate.is_set() and "second" not in results  # it waits for the lock
    gate.set()
    first.join(timeout=30)
    second.join(timeout=30)
    assert results["first"] == results["second"]
    assert (results["first"] / MARKER).is_file()
    assert gated.calls == 1
    assert logged("converted meanwhile by another process")


def _prepare_in_child(checkpoint: Path, cache: Path, record: Path, queue: Any) -> None:
    try:
        path = prepare(checkpoint, cache, FakeConverter(record, delay=0.5))
        queue.put(str(path))
    except BaseException as exc:  # pragma: no cover - reported by the parent
        queue.put(f"error: {exc!r}")


def test_two_processes_convert_once(checkpoint: Path, cache: Path, tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    record = tmp_path / "processes.log"
    children = [
        context.Process(target=_prepare_in_child, args=(checkpoint, cache, record, queue))
        for _ in range(2)
    ]
    for child in children:
        child.start()
    outcomes = [queue.get(timeout=60) for _ in children]
    for child in children:
        child.join(timeout=60)
        assert child.exitcode == 0
    assert outcomes[0] == outcomes[1], outcomes
    assert (Path(outcomes[0]) / MARKER).is_file()
    assert len(record.read_text().splitlines()) == 1


def test_lang_ids_are_completed_from_the_tokenizer(
    checkpoint: Path, cache: Path, fake: FakeConverter
) -> None:
    ids = write_tokenizer(checkpoint / "tokenizer.json")
    converted = prepare(checkpoint, cache, fake)
    lang_ids = json.loads((converted / "config.json").read_text())["lang_ids"]
    assert lang_ids == [ids[f"<|{code}|>"] for code in LANGUAGES]


def test_lang_ids_prefer_generation_config(
    checkpoint: Path, cache: Path, fake: FakeConverter
) -> None:
    ids = write_tokenizer(checkpoint / "tokenizer.json")
    lang_to_id = {"<|de|>": ids["<|de|>"], "<|en|>": ids["<|en|>"]}
    (checkpoint / "generation_config.json").write_text(json.dumps({"lang_to_id": lang_to_id}))
    converted = prepare(checkpoint, cache, fake)
    lang_ids = json.loads((converted / "config.json").read_text())["lang_ids"]
    assert lang_ids == sorted(lang_to_id.values())
    assert "generation_config.json" in json.loads((converted / "staged.json").read_text())


def test_missing_hf_extra_names_the_install_command(
    checkpoint: Path, cache: Path, fake: FakeConverter, monkeypatch: pytest.MonkeyPatch
) -> None:
    cached = prepare(checkpoint, cache, fake)
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    # A cached conversion needs neither torch nor transformers ...
    assert prepare_checkpoint(checkpoint, cache_dir=cache) == cached
    # ... a new conversion does.
    with pytest.raises(CheckpointError) as excinfo:
        prepare_checkpoint(checkpoint, cache_dir=cache, compute_type="float32")
    assert_one_line_error(excinfo, "transformers and torch", "pip install 'whisperwire[hf]'")


@pytest.mark.parametrize("version", ["4.45.2", "4.55.4"])
def test_known_bad_transformers_is_refused_before_converting(
    checkpoint: Path, cache: Path, monkeypatch: pytest.MonkeyPatch, version: str
) -> None:
    """transformers < 4.56 fails inside CTranslate2's converter (``dtype=``): refuse it first."""
    monkeypatch.setitem(sys.modules, "torch", types.ModuleType("torch"))
    monkeypatch.setitem(sys.modules, "transformers", types.SimpleNamespace(__version__=version))
    with pytest.raises(CheckpointError) as excinfo:
        prepare_checkpoint(checkpoint, cache_dir=cache)
    assert_one_line_error(excinfo, f"transformers {version}", "transformers>=4.56")
    assert not cache.exists() or not any(path.is_dir() for path in cache.iterdir())


@pytest.mark.parametrize("version", ["4.56.0", "4.57.6", "5.24.0"])
def test_supported_transformers_is_accepted(version: str) -> None:
    check_converter_version(version)


# -- tokenizer and preprocessor from a base model ----------------------------------------------


def test_missing_tokenizer_without_base_model(tmp_path: Path, cache: Path, fake: FakeConverter):
    bare = make_checkpoint(tmp_path / "bare", tokenizer=False)
    with pytest.raises(CheckpointError) as excinfo:
        prepare(bare, cache, fake)
    assert_one_line_error(excinfo, "tokenizer.json", "base model")


def test_tokenizer_and_preprocessor_from_a_base_directory(
    tmp_path: Path, cache: Path, fake: FakeConverter
) -> None:
    bare = make_checkpoint(tmp_path / "bare", tokenizer=False, preprocessor=False)
    base = make_checkpoint(tmp_path / "base")
    (base / "tokenizer_config.json").write_text("{}")
    converted = prepare(bare, cache, fake, base_model=str(base))
    staged = json.loads((converted / "staged.json").read_text())
    assert {"tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"} <= set(staged)
    assert (converted / "tokenizer.json").read_bytes() == (base / "tokenizer.json").read_bytes()


def _fake_hub_cache(root: Path, repo_id: str, files: dict[str, Path]) -> None:
    """The layout huggingface_hub uses: models--org--name/{refs/main,snapshots/<sha>/...}."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / "0123456789abcdef"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123456789abcdef")
    for name, source in files.items():
        shutil.copyfile(source, snapshot / name)


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import huggingface_hub.constants

    hub = tmp_path / "hub"
    hub.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return hub


def test_tokenizer_from_a_hub_name_in_the_local_cache(
    tmp_path: Path, cache: Path, fake: FakeConverter, offline_hub: Path
) -> None:
    base = make_checkpoint(tmp_path / "base")
    _fake_hub_cache(
        offline_hub,
        "acme/whisper-base",
        {
            "tokenizer.json": base / "tokenizer.json",
            "preprocessor_config.json": base / "preprocessor_config.json",
        },
    )
    bare = make_checkpoint(tmp_path / "bare", tokenizer=False, preprocessor=False)
    converted = prepare(bare, cache, fake, base_model="acme/whisper-base")
    assert (converted / "tokenizer.json").read_bytes() == (base / "tokenizer.json").read_bytes()


def test_hub_name_missing_offline(
    tmp_path: Path, cache: Path, fake: FakeConverter, offline_hub: Path
) -> None:
    bare = make_checkpoint(tmp_path / "bare", tokenizer=False)
    with pytest.raises(CheckpointError) as excinfo:
        prepare(bare, cache, fake, base_model="openai/whisper-small")
    assert_one_line_error(
        excinfo, "tokenizer.json", "'openai/whisper-small'", "local Hugging Face cache (offline)"
    )
    assert fake.calls == 0


def test_base_model_that_is_neither_directory_nor_name(
    tmp_path: Path, cache: Path, fake: FakeConverter
) -> None:
    bare = make_checkpoint(tmp_path / "bare", tokenizer=False)
    with pytest.raises(CheckpointError) as excinfo:
        prepare(bare, cache, fake, base_model=str(tmp_path / "no" / "such" / "dir"))
    assert_one_line_error(excinfo, "neither a directory nor a Hugging Face model name")


# -- languages ---------------------------------------------------------------------------------


def test_checkpoint_languages(tmp_path: Path) -> None:
    write_tokenizer(tmp_path / "tokenizer.json", languages=("en", "de", "xx"))
    assert checkpoint_languages(tmp_path) == ["en", "de", "xx"]
    assert checkpoint_languages(tmp_path, multilingual=False) == ["en"]


def test_checkpoint_languages_unknown(tmp_path: Path) -> None:
    assert checkpoint_languages(tmp_path) is None
    (tmp_path / "tokenizer.json").write_text("not a tokenizer")
    assert checkpoint_languages(tmp_path) is None
