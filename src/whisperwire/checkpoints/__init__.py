"""Fine-tuned Whisper checkpoints in Hugging Face layout, served at CTranslate2 speed.

A fine-tuning run leaves a directory with ``config.json``, the weights (``model.safetensors`` or
``pytorch_model.bin``, possibly sharded behind an index file), tokenizer and preprocessor files.
:func:`prepare_checkpoint` checks such a directory, converts it once with CTranslate2's
Transformers converter and caches the result under a key made from the checkpoint's content, so an
unchanged checkpoint starts at once and a changed one is converted again.

The modules: :mod:`.inspection` (what a directory holds, checked before any heavy work),
:mod:`.base_model` (where files the checkpoint lacks come from), :mod:`.conversion` (the
conversion itself), :mod:`.cache` (the conversion cache, :func:`prepare_checkpoint` and
:func:`prepare_ggml`),
:mod:`.tokens` (a tokenizer's language tokens) and :mod:`.errors` (:class:`CheckpointError`).
whisper.cpp's ggml model files take the same path: :mod:`.ggml` reads one (dequantizing its
weights), :mod:`.ggml_hf` writes it as a checkpoint, with a tokenizer from :mod:`.ggml_vocab`.
"""

from whisperwire.checkpoints.cache import default_cache_dir, prepare_checkpoint, prepare_ggml
from whisperwire.checkpoints.conversion import MARKER, check_converter_version, quantization_for
from whisperwire.checkpoints.errors import CheckpointError
from whisperwire.checkpoints.tokens import checkpoint_languages

__all__ = [
    "MARKER",
    "CheckpointError",
    "check_converter_version",
    "checkpoint_languages",
    "default_cache_dir",
    "prepare_checkpoint",
    "prepare_ggml",
    "quantization_for",
]
