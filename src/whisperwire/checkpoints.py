"""Fine-tuned Whisper checkpoints in Hugging Face layout, served at CTranslate2 speed.

A fine-tuning run leaves a directory with ``config.json``, the weights (``model.safetensors`` or
``pytorch_model.bin``, possibly sharded behind an index file), tokenizer and preprocessor files.
:func:`prepare_checkpoint` checks such a directory, converts it once with CTranslate2's
Transformers converter and caches the result under a key made from the checkpoint's content, so an
unchanged checkpoint starts at once and a changed one is converted again.

The cache directory holds one finished model directory per key (it carries the marker file
:data:`MARKER`), a lock file per key (``fcntl.flock``) so that two servers never convert the same
checkpoint at once, and, only while a conversion runs, a ``<name>.tmp-*`` work directory that is
renamed into place when complete. Work directories left by a killed conversion are removed by the
next conversion of the same checkpoint.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import importlib
import json
import logging
import os
import re
import shutil
import struct
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import ctranslate2

__all__ = [
    "MARKER",
    "CheckpointError",
    "check_converter_version",
    "checkpoint_languages",
    "default_cache_dir",
    "is_hf_checkpoint",
    "prepare_checkpoint",
    "quantization_for",
]

logger = logging.getLogger("whisperwire.checkpoints")

StrPath = str | os.PathLike[str]

ConverterFactory = Callable[..., Any]
"""Called as ``factory(model_dir, copy_files=[...])``; returns an object whose
``convert(output_dir, quantization=...)`` writes a CTranslate2 model, like
``ctranslate2.converters.TransformersConverter`` (the default)."""

MARKER = "whisperwire-conversion.json"
"""Written into a converted model directory last: only a directory holding it is used."""

RECIPE_VERSION = 2
"""Part of the cache key: bump it when the conversion output changes for the same input.
2: weights stored as float16 (quantized at load time), no longer pre-quantized."""

HF_EXTRA_HINT = "pip install 'whisperwire[hf]'"
MIN_TRANSFORMERS = "4.56"  # see check_converter_version

QUANTIZATIONS = frozenset(
    {
        "int8",
        "int8_float32",
        "int8_float16",
        "int8_bfloat16",
        "int16",
        "float16",
        "bfloat16",
        "float32",
    }
)
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "special_tokens_map.json",
    "normalizer.json",
)
PREPROCESSOR = "preprocessor_config.json"
# faster-whisper reads these two from the model directory (tokens, mel bins).
COPIED_FILES = ("tokenizer.json", PREPROCESSOR)
WEIGHT_LAYOUTS = (
    ("model.safetensors", "model.safetensors.index.json"),
    ("pytorch_model.bin", "pytorch_model.bin.index.json"),
)
# Special tokens that look like language tokens but are not.
_NOT_LANGUAGES = frozenset(
    {
        "endoftext",
        "startoftranscript",
        "translate",
        "transcribe",
        "startoflm",
        "startofprev",
        "nocaptions",
        "nospeech",
        "notimestamps",
    }
)
_SPECIAL = re.compile(r"<\|([^|]+)\|>")


class CheckpointError(Exception):
    """A checkpoint can't be used; the message is one human-readable line naming the problem."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


@dataclass(frozen=True)
class _Checkpoint:
    root: Path
    config: dict[str, Any]
    files: dict[str, Path]  # file name in the staged checkpoint -> source file
    build_tokenizer_json: bool  # only vocab.json + merges.txt: build tokenizer.json
    derive_preprocessor: bool  # no preprocessor_config.json anywhere: derive it from config.json


# -- public helpers ----------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/whisperwire/checkpoints``, else ``~/.cache/whisperwire/checkpoints``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "whisperwire" / "checkpoints"


def is_hf_checkpoint(path: StrPath) -> bool:
    """True for a directory whose ``config.json`` says ``"model_type": "whisper"``."""
    try:
        config = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("model_type") == "whisper"


def quantization_for(compute_type: str) -> str:
    """The weight type a conversion stores, for a ``--compute-type`` (checked here).

    float16, like the stock faster-whisper models, for every compute type but ``float32`` and
    ``bfloat16``, which keep their own type so that no precision is lost before they compute.
    CTranslate2 then converts or quantizes at load time (``int8`` and the like) exactly as it does
    for a stock model, so a checkpoint and the stock model with the same weights compute the same
    numbers. Quantizing in the converter instead gives other int8 weights (the converter's numpy
    rounding, its int8 convolutions): the same weights then transcribed differently from the stock
    model, by a few WER points either way depending on the CPU's kernels.
    """
    wanted = compute_type.strip().lower()
    if wanted not in QUANTIZATIONS | {"default", "auto"}:
        accepted = ", ".join(sorted(QUANTIZATIONS | {"default", "auto"}))
        raise CheckpointError(f"unknown compute type {compute_type!r} (accepted: {accepted})")
    return wanted if wanted in {"float32", "bfloat16"} else "float16"


def checkpoint_languages(
    model_dir: StrPath, *, multilingual: bool | None = None
) -> list[str] | None:
    """Language codes the tokenizer in ``model_dir`` knows (tokens such as ``<|de|>``).

    Works on a converted directory or a Hugging Face checkpoint. Language tokens are the special
    tokens between ``<|startoftranscript|>`` and ``<|translate|>``, in token order, so a
    fine-tune's added language is included. An English-only model gives ``["en"]``: its tokenizer
    lists every language, but the model only does English. ``multilingual`` overrides the
    detection (pass ``WhisperModel.model.is_multilingual``); otherwise the vocabulary layout
    decides: English-only Whisper vocabularies put ``<|endoftext|>`` at 50256, multilingual ones
    at 50257. None when there is no readable Whisper tokenizer.
    """
    try:
        vocab = _load_tokenizer(Path(model_dir) / "tokenizer.json").get_vocab(
            with_added_tokens=True
        )
    except Exception:  # any unreadable tokenizer means "unknown"
        return None
    languages = _language_tokens(vocab)
    if not languages:
        return None
    if multilingual is None:
        multilingual = vocab.get("<|endoftext|>") != 50256
    return list(languages) if multilingual else ["en"]


def prepare_checkpoint(
    path: StrPath,
    *,
    cache_dir: StrPath | None = None,
    compute_type: str = "int8",
    base_model: str | None = None,
    log: logging.Logger | None = None,
    converter: ConverterFactory | None = None,
) -> Path:
    """Check a Hugging Face Whisper checkpoint, convert it once, return the CTranslate2 directory.

    The returned directory loads with ``faster_whisper.WhisperModel(str(path))`` and holds the
    checkpoint's ``tokenizer.json`` and ``preprocessor_config.json``. Files the checkpoint lacks
    come from ``base_model``: a directory, or a Hugging Face model name looked up in the local
    Hugging Face cache (and downloaded only when the hub is not offline). Without a preprocessor
    file anywhere, one is derived from ``config.json``'s ``num_mel_bins``. ``converter`` replaces
    the CTranslate2 converter factory (tests). Raises :class:`CheckpointError`.
    """
    log = log or logger
    quantization = quantization_for(compute_type)
    checkpoint = _inspect(Path(path).expanduser(), base_model, log)

    started = time.monotonic()
    key = _cache_key(checkpoint, quantization)
    size_mb = sum(file.stat().st_size for file in checkpoint.files.values()) / 1e6
    log.debug(
        "hashed %d checkpoint files (%.0f MB) in %.2f s",
        len(checkpoint.files),
        size_mb,
        time.monotonic() - started,
    )

    cache = (Path(cache_dir).expanduser() if cache_dir else default_cache_dir()).absolute()
    target = cache / f"whisper-{quantization}-{key[:24]}"
    if _is_complete(target):
        log.info("checkpoint %s: using the cached conversion %s", checkpoint.root, target)
        return target

    factory = converter if converter is not None else _default_converter()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(f"cannot create the checkpoint cache {cache}: {exc}") from exc
    with _exclusive(cache / f"{target.name}.lock", log):
        if _is_complete(target):
            log.info(
                "checkpoint %s: converted meanwhile by another process: %s", checkpoint.root, target
            )
            return target
        _discard_leftovers(target, log)
        _convert(checkpoint, target, quantization, key, factory, log)
    return target


# -- validation --------------------------------------------------------------------------------


def _inspect(root: Path, base_model: str | None, log: logging.Logger) -> _Checkpoint:
    """Cheap checks before any heavy work; gathers the files a conversion reads."""
    try:
        if not root.is_dir():
            what = "is not a directory" if root.exists() else "does not exist"
            raise CheckpointError(f"checkpoint {root} {what}")
        names = {entry.name for entry in os.scandir(root) if entry.is_file()}
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint directory {root}: {_reason(exc)}") from exc

    if "config.json" not in names:
        raise CheckpointError(f"{root} has no config.json: not a Hugging Face checkpoint")
    config = _read_json(root / "config.json")
    model_type = config.get("model_type")
    if model_type is None:
        raise CheckpointError(
            f"{root}/config.json has no model_type: not a Hugging Face checkpoint"
        )
    if model_type != "whisper":
        raise CheckpointError(
            f"{root} holds a {model_type!r} model (config.json model_type), not a Whisper model"
        )

    files = {"config.json": root / "config.json"}
    files.update(_weight_files(root, names))
    if "generation_config.json" in names:
        files["generation_config.json"] = root / "generation_config.json"

    base = _BaseModel(base_model, log) if base_model else None
    tokenizer = _tokenizer_group({n: root / n for n in TOKENIZER_FILES if n in names})
    if tokenizer is None and base is not None:
        tokenizer = _tokenizer_group(base.files(TOKENIZER_FILES))
        if tokenizer is not None:
            log.info("checkpoint %s: taking the tokenizer from %s", root, base_model)
    if tokenizer is None:
        wanted = "tokenizer.json (or vocab.json + merges.txt)"
        if base is None:
            raise CheckpointError(
                f"{root} lacks {wanted}; pass a base model (a directory or a Hugging Face name "
                "such as openai/whisper-small) to take the tokenizer from"
            )
        raise CheckpointError(f"{root} lacks {wanted} and base model {base.describe()} has none")
    files.update(tokenizer)

    preprocessor = root / PREPROCESSOR if PREPROCESSOR in names else None
    if preprocessor is None and base is not None:
        preprocessor = base.files((PREPROCESSOR,)).get(PREPROCESSOR)
    if preprocessor is not None:
        _check_preprocessor(preprocessor, config)
        files[PREPROCESSOR] = preprocessor

    return _Checkpoint(
        root=root,
        config=config,
        files=files,
        build_tokenizer_json="tokenizer.json" not in files,
        derive_preprocessor=preprocessor is None,
    )


def _weight_files(root: Path, names: set[str]) -> dict[str, Path]:
    for single, index in WEIGHT_LAYOUTS:
        if single in names:
            _check_weights(root / single)
            return {single: root / single}
        if index in names:
            weight_map = _read_json(root / index).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise CheckpointError(f"{root / index} has no weight_map")
            files = {index: root / index}
            for shard in sorted(set(map(str, weight_map.values()))):
                if Path(shard).name != shard:
                    raise CheckpointError(f"{root / index} names a shard outside the checkpoint")
                if shard not in names:
                    raise CheckpointError(f"{root / shard} (listed in {index}) is missing")
                _check_weights(root / shard)
                files[shard] = root / shard
            return files
    raise CheckpointError(
        f"{root} has no weights: expected model.safetensors, pytorch_model.bin or a sharded "
        "index (model.safetensors.index.json, pytorch_model.bin.index.json)"
    )


def _check_weights(path: Path) -> None:
    try:
        if path.suffix == ".safetensors":
            _check_safetensors(path)
        else:
            _check_torch_file(path)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {_reason(exc)}") from exc


def _check_safetensors(path: Path) -> None:
    """Header and size: a truncated file is caught without loading any tensor."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(8)
        header_len = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        if not 0 < header_len <= size - 8:
            raise CheckpointError(f"{path} is damaged or truncated: no valid safetensors header")
        try:
            header = json.loads(fh.read(header_len))
            data_end = max(
                (int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"),
                default=0,
            )
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            raise CheckpointError(f"{path} has a damaged safetensors header") from exc
    expected = 8 + header_len + data_end
    if size < expected:
        raise CheckpointError(f"{path} is truncated: {size} bytes, its header describes {expected}")


def _check_torch_file(path: Path) -> None:
    """``torch.save`` writes a zip archive (or, before torch 1.6, a pickle)."""
    with path.open("rb") as fh:
        magic = fh.read(2)
    if magic == b"PK":
        try:
            with zipfile.ZipFile(path):
                pass
        except zipfile.BadZipFile as exc:
            raise CheckpointError(f"{path} is truncated or damaged ({exc})") from exc
    elif not magic.startswith(b"\x80"):
        raise CheckpointError(f"{path} is not a PyTorch checkpoint")


def _check_preprocessor(path: Path, config: dict[str, Any]) -> None:
    feature_size = _read_json(path).get("feature_size")
    mel_bins = config.get("num_mel_bins", 80)
    if feature_size != mel_bins:
        raise CheckpointError(
            f"{path} has feature_size {feature_size} but the model's config.json num_mel_bins "
            f"is {mel_bins}"
        )


def _tokenizer_group(found: dict[str, Path]) -> dict[str, Path] | None:
    """The tokenizer files of one source, if they make a tokenizer."""
    if "tokenizer.json" in found or {"vocab.json", "merges.txt"} <= found.keys():
        return found
    return None


class _BaseModel:
    """Where missing tokenizer/preprocessor files come from: a directory or a hub name."""

    def __init__(self, name: str, log: logging.Logger) -> None:
        self.name = name
        self.log = log
        self.directory = Path(name).expanduser()
        self.offline = _hub_offline()
        if not self.directory.is_dir() and not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name):
            raise CheckpointError(
                f"base model {name!r} is neither a directory nor a Hugging Face model name"
            )

    def describe(self) -> str:
        if self.directory.is_dir():
            return str(self.directory)
        where = "the local Hugging Face cache (offline)" if self.offline else "the Hugging Face hub"
        return f"{self.name!r} in {where}"

    def files(self, names: tuple[str, ...]) -> dict[str, Path]:
        if self.directory.is_dir():
            return {n: self.directory / n for n in names if (self.directory / n).is_file()}
        return {n: p for n in names if (p := self._hub_file(n)) is not None}

    def _hub_file(self, filename: str) -> Path | None:
        import huggingface_hub  # a faster-whisper dependency

        cached = huggingface_hub.try_to_load_from_cache(self.name, filename)
        if isinstance(cached, str):
            return Path(cached)
        if self.offline:
            return None
        try:
            return Path(huggingface_hub.hf_hub_download(self.name, filename))
        except Exception as exc:  # absent file, unknown repo, no network alike
            self.log.debug("base model %s: no %s (%s)", self.name, filename, exc)
            return None


def _hub_offline() -> bool:
    flags = (os.environ.get(v, "") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(flag.strip().lower() in {"1", "true", "yes", "on"} for flag in flags)


# -- cache and conversion ----------------------------------------------------------------------


def _cache_key(checkpoint: _Checkpoint, quantization: str) -> str:
    digest = hashlib.sha256()
    recipe = {"recipe": RECIPE_VERSION, "ctranslate2": ctranslate2.__version__, "q": quantization}
    digest.update(json.dumps(recipe, sort_keys=True).encode())
    for name in sorted(checkpoint.files):
        digest.update(f"\0{name}\0{_file_digest(checkpoint.files[name])}".encode())
    return digest.hexdigest()


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {_reason(exc)}") from exc
    return digest.hexdigest()


def _is_complete(model_dir: Path) -> bool:
    return (model_dir / MARKER).is_file()


@contextlib.contextmanager
def _exclusive(lock_path: Path, log: logging.Logger) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` (also between threads: one fd each)."""
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise CheckpointError(f"cannot create the lock file {lock_path}: {_reason(exc)}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info(
                "another process is converting this checkpoint; waiting for it (%s)", lock_path
            )
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _discard_leftovers(target: Path, log: logging.Logger) -> None:
    """Under the lock: remove what killed conversions of this key left behind."""
    leftovers = sorted(target.parent.glob(f"{glob.escape(target.name)}.tmp-*"))
    if target.exists():  # a directory without the marker was never finished
        leftovers.append(target)
    for leftover in leftovers:
        log.warning("removing %s, left by an interrupted conversion", leftover)
        shutil.rmtree(leftover, ignore_errors=True)


def _convert(
    checkpoint: _Checkpoint,
    target: Path,
    quantization: str,
    key: str,
    factory: ConverterFactory,
    log: logging.Logger,
) -> None:
    work = Path(tempfile.mkdtemp(prefix=f"{target.name}.tmp-", dir=target.parent))
    try:
        staged = work / "checkpoint"
        staged.mkdir()
        for name, source in checkpoint.files.items():
            (staged / name).symlink_to(source.resolve())
        if checkpoint.build_tokenizer_json:
            log.info(
                "checkpoint %s: building tokenizer.json from vocab.json and merges.txt",
                checkpoint.root,
            )
            _build_tokenizer_json(staged)
        if checkpoint.derive_preprocessor:
            log.warning(
                "checkpoint %s has no %s: deriving it from config.json (num_mel_bins=%s)",
                checkpoint.root,
                PREPROCESSOR,
                checkpoint.config.get("num_mel_bins", 80),
            )
            _derive_preprocessor(staged, checkpoint.config)
        _check_tokenizer(staged / "tokenizer.json", checkpoint)

        log.info(
            "converting %s to CTranslate2 (%s); this happens once per checkpoint",
            checkpoint.root,
            quantization,
        )
        started = time.monotonic()
        output = work / "model"
        factory(str(staged), copy_files=list(COPIED_FILES)).convert(
            str(output), quantization=quantization
        )
        seconds = time.monotonic() - started
        _complete_lang_ids(output, staged)
        _sync_files(output)
        marker = {
            "source": str(checkpoint.root.resolve()),
            "quantization": quantization,
            "ctranslate2": ctranslate2.__version__,
            "recipe": RECIPE_VERSION,
            "key": key,
            "seconds": round(seconds, 2),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        with (output / MARKER).open("w", encoding="utf-8") as fh:
            json.dump(marker, fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(output, target)
        _sync_files(target.parent, directory_only=True)
        log.info("converted %s in %.1f s into %s", checkpoint.root, seconds, target)
    except CheckpointError:
        raise
    except Exception as exc:
        first_line = (str(exc).strip().splitlines() or [""])[0]
        raise CheckpointError(
            f"converting {checkpoint.root} failed: {type(exc).__name__}: {first_line}"
        ) from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _default_converter() -> ConverterFactory:
    check_converter_version(_require_hf().__version__)
    from ctranslate2.converters import TransformersConverter

    return TransformersConverter


def check_converter_version(transformers_version: str) -> None:
    """Refuse a transformers release that CTranslate2's converter cannot drive.

    The converter loads the model with ``from_pretrained(..., dtype=...)``; transformers before
    4.56 passes that keyword on to the model's constructor, and the conversion fails half-way
    (``__init__() got an unexpected keyword argument 'dtype'``).
    """
    from packaging.version import Version  # a dependency of transformers

    if Version(transformers_version) < Version(MIN_TRANSFORMERS):
        raise CheckpointError(
            f"transformers {transformers_version} cannot convert checkpoints with CTranslate2 "
            f"{ctranslate2.__version__}: install transformers>={MIN_TRANSFORMERS} "
            f"({HF_EXTRA_HINT})"
        )


def _require_hf() -> ModuleType:
    """``transformers`` (and ``torch``), or the install hint."""
    try:
        importlib.import_module("torch")
        return importlib.import_module("transformers")
    except ImportError as exc:
        missing = exc.name or "a dependency"
        raise CheckpointError(
            f"converting a Hugging Face checkpoint needs transformers and torch ({missing} is "
            f"not installed): {HF_EXTRA_HINT}"
        ) from exc


def _build_tokenizer_json(staged: Path) -> None:
    """tokenizer.json from vocab.json + merges.txt and the added/special tokens files."""
    transformers = _require_hf()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(staged))
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise CheckpointError(f"cannot build tokenizer.json from the tokenizer files in {staged}")
    backend.save(str(staged / "tokenizer.json"))


def _derive_preprocessor(staged: Path, config: dict[str, Any]) -> None:
    transformers = _require_hf()
    extractor = transformers.WhisperFeatureExtractor(feature_size=config.get("num_mel_bins", 80))
    extractor.to_json_file(str(staged / PREPROCESSOR))


def _check_tokenizer(path: Path, checkpoint: _Checkpoint) -> None:
    """The ids must line up with the model, or CTranslate2's vocabulary would be shifted."""
    try:
        vocab = _load_tokenizer(path).get_vocab(with_added_tokens=True)
    except Exception as exc:
        raise CheckpointError(f"the tokenizer of {checkpoint.root} does not load: {exc}") from exc
    ids = sorted(vocab.values())
    if ids != list(range(len(ids))):
        raise CheckpointError(f"the tokenizer of {checkpoint.root} has gaps in its token ids")
    vocab_size = checkpoint.config.get("vocab_size")
    if isinstance(vocab_size, int) and len(ids) > vocab_size:
        raise CheckpointError(
            f"the tokenizer of {checkpoint.root} has {len(ids)} tokens, more than the model's "
            f"vocab_size {vocab_size}"
        )
    sot = vocab.get("<|startoftranscript|>")
    start = checkpoint.config.get("decoder_start_token_id")
    if sot is None or (isinstance(start, int) and sot != start):
        raise CheckpointError(
            f"the tokenizer of {checkpoint.root} does not match the model: <|startoftranscript|> "
            f"is token {sot} but config.json decoder_start_token_id is {start}"
        )


def _complete_lang_ids(output: Path, staged: Path) -> None:
    """Fill CTranslate2's ``lang_ids`` when the converter could not.

    With transformers 5 the converter finds neither ``generation_config.lang_to_id`` nor the
    tokenizer's ``additional_special_tokens`` and writes ``lang_ids: []``; language detection
    then fails. Take them from the checkpoint's ``generation_config.json``, else the tokenizer.
    """
    config_path = output / "config.json"
    if not config_path.is_file():
        return
    config = _read_json(config_path)
    if config.get("lang_ids"):
        return
    lang_to_id: Any = None
    if (staged / "generation_config.json").is_file():
        lang_to_id = _read_json(staged / "generation_config.json").get("lang_to_id")
    if isinstance(lang_to_id, dict) and lang_to_id:
        lang_ids = sorted(int(i) for i in lang_to_id.values())
    else:
        vocab = _load_tokenizer(staged / "tokenizer.json").get_vocab(with_added_tokens=True)
        lang_ids = sorted(_language_tokens(vocab).values())
    if lang_ids:
        config["lang_ids"] = lang_ids
        config_path.write_text(json.dumps(config, indent=4), encoding="utf-8")


def _sync_files(directory: Path, *, directory_only: bool = False) -> None:
    """fsync a finished model (so the marker never outlives its files) or a directory entry."""
    paths = [directory] if directory_only else [*directory.iterdir(), directory]
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# -- small utilities ---------------------------------------------------------------------------


def _load_tokenizer(path: Path) -> Any:
    import tokenizers  # a faster-whisper dependency

    return tokenizers.Tokenizer.from_file(str(path))


def _language_tokens(vocab: dict[str, int]) -> dict[str, int]:
    """``{code: id}`` of the tokens between <|startoftranscript|> and <|translate|>, by id."""
    first, last = vocab.get("<|startoftranscript|>"), vocab.get("<|translate|>")
    if first is None or last is None:
        return {}
    found = {}
    for token, token_id in sorted(vocab.items(), key=lambda item: item[1]):
        match = _SPECIAL.fullmatch(token) if first < token_id < last else None
        if match and match.group(1) not in _NOT_LANGUAGES:
            found[match.group(1)] = token_id
    return found


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {_reason(exc)}") from exc
    except ValueError as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} does not hold a JSON object")
    return data


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)
