"""whisper.cpp ggml files: the reader, the dequantizer, the tokenizer, the errors, the cache.

Files are written by ``tests/ggml_models.py`` (whisper.cpp's converter layout, blocks from
``gguf.quants``) for a Whisper model of tiny size with random weights; the vocabulary is the
shared tiny.en checkpoint's, the only part that must be real. No real conversion here: a fake
converter stands in for CTranslate2's (the real one runs in tests/e2e/test_ggml_serving.py).
"""

from __future__ import annotations

import json
import logging
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ggml_models import FILE_TYPES, vocabulary, write_ggml_state

from whisperwire.checkpoints import MARKER, CheckpointError, prepare_ggml
from whisperwire.checkpoints import ggml as ggml_format
from whisperwire.checkpoints.ggml import read_ggml
from whisperwire.checkpoints.ggml_hf import check_shape, expected_tensors, write_checkpoint
from whisperwire.checkpoints.ggml_vocab import build_tokenizer_json
from whisperwire.engine import resolve_model

REPO = Path(__file__).resolve().parents[2]
MODELS = Path(os.environ.get("WHISPERWIRE_TEST_MODELS", REPO.parent / "shared" / "models"))
TINY_EN = MODELS / "whisper-tiny.en-hf"
CONFIG = {"vocab_size": 51864, "max_source_positions": 1500, "d_model": 64,
          "encoder_attention_heads": 2, "encoder_layers": 1, "max_target_positions": 448,
          "decoder_attention_heads": 2, "decoder_layers": 1, "num_mel_bins": 80}  # fmt: skip
HPARAMS = {"n_vocab": 51864, "n_audio_ctx": 1500, "n_audio_state": 64, "n_audio_head": 2,
           "n_audio_layer": 1, "n_text_ctx": 448, "n_text_state": 64, "n_text_head": 2,
           "n_text_layer": 1, "n_mels": 80, "ftype": 1}  # fmt: skip
# Largest error of one dequantized weight, relative to the largest |weight| (symmetric types
# can clip the far end of a block by one step: 1/8 of its largest weight at 4 bits).
TOLERANCE = {"f32": 1e-6, "f16": 1e-3, "q8_0": 0.01, "q5_1": 0.04, "q5_0": 0.07,
             "q4_1": 0.08, "q4_0": 0.13}  # fmt: skip


@pytest.fixture(scope="module")
def tokens() -> list[bytes]:
    if not (TINY_EN / "tokenizer.json").is_file():
        pytest.skip(f"no tiny.en checkpoint at {TINY_EN} (set WHISPERWIRE_TEST_MODELS)")
    return vocabulary(TINY_EN / "tokenizer.json")


@pytest.fixture(scope="module")
def state() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    shapes = {hf: shape for shape, hf in expected_tensors(HPARAMS).values()}
    return {name: 0.1 * rng.standard_normal(shape, np.float32) for name, shape in shapes.items()}


@pytest.fixture(scope="module")
def files(
    tokens: list[bytes], state: dict[str, np.ndarray], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ggml")
    filters = np.random.default_rng(1).random((80, 201)).astype(np.float32)
    return {
        wtype: write_ggml_state(state, CONFIG, tokens, filters, root / f"tiny-{wtype}.bin", wtype)
        for wtype in FILE_TYPES
    }


def broken(source: Path, tmp_path: Path, edit: Any) -> Path:
    data = bytearray(source.read_bytes())
    out = tmp_path / "broken.bin"
    out.write_bytes(bytes(edit(data)))
    return out


def tensor_type_offset(data: bytearray, name: str, n_dims: int) -> int:
    return data.index(name.encode()) - 4 * n_dims - 4


# -- the format ----------------------------------------------------------------------------------


@pytest.mark.parametrize("wtype", list(FILE_TYPES))
def test_every_weight_type_reads_back(
    wtype: str, files: dict[str, Path], state: dict[str, np.ndarray]
) -> None:
    model = read_ggml(files[wtype])
    assert model.hparams == {**HPARAMS, "ftype": FILE_TYPES[wtype]}
    assert model.qnt_version == (0 if wtype in ("f16", "f32") else 2)
    assert wtype in model.types() and not model.multilingual
    assert len(model.tokens) == 50256 and model.tokens[220] == b" "
    for name, (shape, hf_name) in check_shape(model).items():
        got = model.tensors[name].array().reshape(shape).astype(np.float32)
        want = state[hf_name]
        limit = TOLERANCE[wtype if model.tensors[name].ttype > 1 or wtype == "f32" else "f16"]
        assert np.abs(got - want).max() <= limit * np.abs(want).max() + 1e-6, name


# -- the tokenizer -------------------------------------------------------------------------------


@pytest.mark.parametrize("with_eot", [False, True], ids=["tiktoken-vocab", "h5-vocab"])
def test_tokenizer_from_the_vocabulary_is_the_checkpoints(tokens: list[bytes], with_eot: bool):
    """Same vocabulary, merges in the same order, specials at the same ids (but 'he' for
    Hebrew, OpenAI's code, where this Hugging Face tokenizer has the old 'iw')."""
    import tokenizers

    reference = json.loads((TINY_EN / "tokenizer.json").read_text())
    file_tokens = vocabulary(TINY_EN / "tokenizer.json", with_eot=with_eot)
    mine = build_tokenizer_json(file_tokens, 51864)
    assert mine["model"]["vocab"] == {
        t: i for t, i in reference["model"]["vocab"].items() if i < 50256
    }
    assert mine["model"]["merges"] == [" ".join(pair) for pair in reference["model"]["merges"]]
    ref_added = {t["id"]: t["content"] for t in reference["added_tokens"]}
    assert ref_added[50278] == "<|iw|>"
    ref_added[50278] = "<|he|>"
    assert {t["id"]: t["content"] for t in mine["added_tokens"]} == ref_added
    ours = tokenizers.Tokenizer.from_str(json.dumps(mine))
    theirs = tokenizers.Tokenizer.from_file(str(TINY_EN / "tokenizer.json"))
    text = " And so, my fellow Americans: naïve café — 1,234.5 “quoted” 日本語"
    assert ours.encode(text).ids == theirs.encode(text).ids
    assert ours.decode(ours.encode(text).ids) == text


def test_suppressed_tokens_are_the_checkpoints(files: dict[str, Path], tmp_path: Path) -> None:
    write_checkpoint(read_ggml(files["f16"]), tmp_path / "ckpt", logging.getLogger("test"))
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    reference = json.loads((TINY_EN / "config.json").read_text())
    for key in ("suppress_tokens", "begin_suppress_tokens", "decoder_start_token_id",
                "eos_token_id", "vocab_size", "num_mel_bins", "max_source_positions"):  # fmt: skip
        assert config[key] == reference[key], key
    from safetensors.numpy import load_file

    weights = load_file(str(tmp_path / "ckpt" / "model.safetensors"))
    assert {name: w.shape for name, w in weights.items()} == {
        hf: shape for shape, hf in expected_tensors(HPARAMS).values()
    }
    assert (
        json.loads((tmp_path / "ckpt" / "preprocessor_config.json").read_text())["feature_size"]
        == 80
    )


# -- errors: one line naming the problem ------------------------------------------------------


def _set_int(offset: int, value: int) -> Any:
    def edit(data: bytearray) -> bytearray:
        data[offset : offset + 4] = struct.pack("<i", value)
        return data

    return edit


HPARAM_OFFSET = {name: 4 + 4 * i for i, name in enumerate(ggml_format.HPARAMS)}
BROKEN = {
    "empty": (lambda d: b"", "is empty"),
    "gguf-magic": (lambda d: b"GGUF" + d[4:], "not a whisper.cpp ggml model file"),
    "text-file": (lambda d: b"hello world\n", "not a whisper.cpp ggml model file"),
    "cut-in-header": (lambda d: d[:30], "truncated: the hyper-parameters"),
    "cut-in-filters": (lambda d: d[:1000], "truncated: the mel filters"),
    "cut-in-vocabulary": (lambda d: d[:200_000], "truncated: token"),
    "cut-in-tensor": (lambda d: d[:-1000], "truncated: tensor decoder"),
    "n_mels": (_set_int(HPARAM_OFFSET["n_mels"], 81), "n_mels is 81"),
    "n_vocab": (_set_int(HPARAM_OFFSET["n_vocab"], 32000), "n_vocab is 32000"),
    "state": (_set_int(HPARAM_OFFSET["n_text_state"], 128), "n_audio_state 64 != n_text_state"),
    "layers": (_set_int(HPARAM_OFFSET["n_audio_layer"], 2), "no tensor encoder.blocks.1"),
    "ctx": (_set_int(HPARAM_OFFSET["n_audio_ctx"], 1000), "is [1500, 64], expected [1000, 64]"),
}


@pytest.mark.parametrize("kind", list(BROKEN))
def test_broken_files_are_one_line_errors(
    kind: str, files: dict[str, Path], tmp_path: Path
) -> None:
    edit, fragment = BROKEN[kind]
    path = broken(files["q8_0"], tmp_path, edit)
    with pytest.raises(CheckpointError) as excinfo:
        check_shape(read_ggml(path))
    message = str(excinfo.value)
    assert "\n" not in message and fragment in message and str(path) in message, message


def test_unsupported_tensor_type(files: dict[str, Path], tmp_path: Path) -> None:
    name = "encoder.blocks.0.attn.query.weight"

    def edit(data: bytearray) -> bytearray:
        offset = tensor_type_offset(data, name, 2)
        data[offset : offset + 4] = struct.pack("<i", 12)  # ggml's q4_K
        return data

    with pytest.raises(CheckpointError, match=f"tensor {name} has type 12, which whisperwire"):
        read_ggml(broken(files["q8_0"], tmp_path, edit))


def test_old_quantization_format_is_refused(files: dict[str, Path], tmp_path: Path) -> None:
    path = broken(files["q5_0"], tmp_path, _set_int(HPARAM_OFFSET["ftype"], 1008))
    with pytest.raises(CheckpointError, match="old ggml format .version 1."):
        read_ggml(path)
    assert read_ggml(broken(files["f16"], tmp_path, _set_int(HPARAM_OFFSET["ftype"], 1)))


def test_a_file_given_to_m_is_taken_for_ggml(files: dict[str, Path]) -> None:
    assert resolve_model(str(files["f16"])).kind == "ggml"


def test_cli_exits_2_with_one_line(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from whisperwire.cli import main

    path = broken(files["q8_0"], tmp_path, BROKEN["gguf-magic"][0])
    code = main(["serve", "-m", str(path), "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "-m/--model" in err[0] and "not a whisper.cpp ggml model file" in err[0], err


# -- the cache -----------------------------------------------------------------------------------


class FakeConverter:
    """Stands in for CTranslate2's TransformersConverter: records the staged checkpoint."""

    def __init__(self) -> None:
        self.staged: list[list[str]] = []

    def __call__(self, model_dir: str, copy_files: list[str] | None = None) -> Any:
        fake = self

        class Run:
            def convert(self, output_dir: str, quantization: str | None = None) -> None:
                fake.staged.append(sorted(p.name for p in Path(model_dir).iterdir()))
                Path(output_dir).mkdir()
                (Path(output_dir) / "model.bin").write_bytes(b"fake")

        return Run()


def test_converted_once_then_reused(
    files: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="whisperwire.checkpoints")
    fake, cache = FakeConverter(), tmp_path / "cache"
    first = prepare_ggml(files["q5_0"], cache_dir=cache, converter=fake)
    assert fake.staged == [["config.json", "generation_config.json", "model.safetensors",
                            "preprocessor_config.json", "tokenizer.json"]]  # fmt: skip
    marker = json.loads((first / MARKER).read_text())
    assert marker["source"] == str(files["q5_0"].resolve())
    assert first.name.startswith("whisper-ggml")
    assert prepare_ggml(files["q5_0"], cache_dir=cache, converter=fake) == first
    assert len(fake.staged) == 1
    assert "using the cached conversion" in caplog.records[-1].getMessage()
    assert not list(cache.glob("*.tmp-*"))
    other = prepare_ggml(files["q8_0"], cache_dir=cache, converter=fake)  # other content
    assert other != first and len(fake.staged) == 2


def test_interrupted_conversion_is_ignored_and_redone(
    files: dict[str, Path], tmp_path: Path
) -> None:
    fake, cache = FakeConverter(), tmp_path / "cache"
    target = prepare_ggml(files["f16"], cache_dir=cache, converter=fake)
    # A conversion killed half-way leaves a work directory; a target without marker is unused.
    leftover = cache / f"{target.name}.tmp-killed"
    (leftover / "checkpoint").mkdir(parents=True)
    (leftover / "checkpoint" / "model.safetensors").write_bytes(b"half")
    (target / MARKER).unlink()
    assert prepare_ggml(files["f16"], cache_dir=cache, converter=fake) == target
    assert len(fake.staged) == 2 and (target / MARKER).is_file()
    assert not list(cache.glob("*.tmp-*"))


def test_a_failed_conversion_leaves_nothing_behind(files: dict[str, Path], tmp_path: Path) -> None:
    cache = tmp_path / "cache"

    def failing(model_dir: str, copy_files: list[str] | None = None) -> Any:
        raise RuntimeError("no memory\nsecond line")

    with pytest.raises(CheckpointError, match="converting .*tiny-f16.bin failed: RuntimeError"):
        prepare_ggml(files["f16"], cache_dir=cache, converter=failing)
    assert [p.suffix for p in cache.iterdir()] == [".lock"]


@pytest.mark.parametrize(
    ("n_vocab", "languages", "no_speech"),
    [(51865, 99, "<|nocaptions|>"), (51866, 100, "<|nospeech|>")],
)
def test_multilingual_vocabulary_layout(
    tokens: list[bytes], n_vocab: int, languages: int, no_speech: str
) -> None:
    """Multilingual Whisper: one more plain token (50256), <|endoftext|> at 50257, then
    <|startoftranscript|>, the languages (v3 adds yue), the tasks; timestamps follow."""
    from whisperwire.checkpoints.tokens import language_tokens

    built = build_tokenizer_json(tokens, n_vocab)  # a file without token 50256
    vocab = {**built["model"]["vocab"], **{t["content"]: t["id"] for t in built["added_tokens"]}}
    assert vocab[""] == 50256 and vocab["<|endoftext|>"] == 50257
    assert vocab["<|startoftranscript|>"] == 50258 and vocab["<|en|>"] == 50259
    found = language_tokens(vocab)
    assert len(found) == languages and list(found)[-1] == ("yue" if languages == 100 else "su")
    assert vocab["<|notimestamps|>"] == 50257 + languages + 7 and no_speech in vocab
    assert n_vocab - vocab["<|notimestamps|>"] - 1 == 1501  # <|0.00|> ... <|30.00|>


def test_multilingual_file_becomes_a_multilingual_checkpoint(
    tokens: list[bytes], tmp_path: Path
) -> None:
    """A large-v3-shaped vocabulary and 128 mel bins, tiny random weights."""
    import tokenizers

    from whisperwire.checkpoints import checkpoint_languages

    hparams = {**HPARAMS, "n_vocab": 51866, "n_mels": 128}
    rng = np.random.default_rng(3)
    shapes = expected_tensors(hparams).values()
    state = {hf: rng.standard_normal(shape, np.float32) for shape, hf in shapes}
    config = {**CONFIG, "vocab_size": 51866, "num_mel_bins": 128}
    filters = np.zeros((128, 201), np.float32)
    path = write_ggml_state(state, config, tokens, filters, tmp_path / "multi.bin", "q5_1")
    model = read_ggml(path)
    assert model.multilingual
    write_checkpoint(model, tmp_path / "ckpt", logging.getLogger("test"))
    generation = json.loads((tmp_path / "ckpt" / "generation_config.json").read_text())
    assert generation["is_multilingual"] and len(generation["lang_to_id"]) == 100
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["num_mel_bins"] == 128
    assert tokenizers.Tokenizer.from_file(str(tmp_path / "ckpt" / "tokenizer.json"))
    languages = checkpoint_languages(tmp_path / "ckpt")
    assert languages is not None and languages[:3] == ["en", "zh", "de"] and "yue" in languages


def test_checkpoint_flag_given_a_file_points_to_m(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from whisperwire.cli import main

    assert main(["serve", "--checkpoint", str(files["f16"])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a file (a ggml model file? use -m)" in err[0], err


def test_alignment_heads_of_known_shapes() -> None:
    from whisperwire.checkpoints.ggml_hf import alignment_heads

    tiny_en = {**HPARAMS, "n_audio_state": 384, "n_text_state": 384, "n_audio_head": 6,
               "n_text_head": 6, "n_audio_layer": 4, "n_text_layer": 4}  # fmt: skip
    reference = json.loads((TINY_EN / "generation_config.json").read_text())["alignment_heads"]
    assert alignment_heads(tiny_en) == reference
    assert alignment_heads({**tiny_en, "n_vocab": 51865}) not in (None, reference)  # tiny
    turbo = {**tiny_en, "n_audio_state": 1280, "n_text_state": 1280, "n_audio_layer": 32,
             "n_text_layer": 4, "n_vocab": 51866, "n_mels": 128}  # fmt: skip
    assert alignment_heads(turbo) is None  # CTranslate2's default
    assert alignment_heads(HPARAMS) is None  # not an OpenAI shape
