"""A Whisper tokenizer's language tokens (``<|de|>``), read from its ``tokenizer.json``."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

StrPath = str | os.PathLike[str]

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
        vocab = load_tokenizer(Path(model_dir) / "tokenizer.json").get_vocab(with_added_tokens=True)
    except Exception:  # any unreadable tokenizer means "unknown"
        return None
    languages = language_tokens(vocab)
    if not languages:
        return None
    if multilingual is None:
        multilingual = vocab.get("<|endoftext|>") != 50256
    return list(languages) if multilingual else ["en"]


def load_tokenizer(path: Path) -> Any:
    """A ``tokenizers.Tokenizer`` from a ``tokenizer.json``; raises what the library raises."""
    import tokenizers  # a faster-whisper dependency

    return tokenizers.Tokenizer.from_file(str(path))


def language_tokens(vocab: dict[str, int]) -> dict[str, int]:
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
