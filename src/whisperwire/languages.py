"""Whisper's language codes as faster-whisper checks them: the one place using its private list.

faster-whisper accepts a ``language`` only when it is in
``faster_whisper.tokenizer._LANGUAGE_CODES``, a tuple of codes with no public accessor, which
``faster_whisper.transcribe`` imports by name for ``WhisperModel.supported_languages``. Every
access to that name is here. pyproject.toml bounds faster-whisper to the releases known to hold
it (1.1 to 1.2.x), and tests/unit/test_languages.py fails, naming the name and the version, when
a release moves it or changes its type; here a missing or changed name raises
:class:`RuntimeError` saying the same, instead of silently patching nothing.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable

PRIVATE_NAME = "_LANGUAGE_CODES"
HOLDERS = ("faster_whisper.tokenizer", "faster_whisper.transcribe")
"""The modules holding :data:`PRIVATE_NAME`: the tokenizer's check reads the first, the model's
``supported_languages`` the second (its own binding, so both are patched)."""


def whisper_languages() -> frozenset[str]:
    """The language codes faster-whisper accepts: Whisper's, and any admitted since."""
    return frozenset(_codes(HOLDERS[0]))


def admit_languages(codes: Iterable[str]) -> tuple[str, ...]:
    """Let faster-whisper accept ``codes``; returns those it did not accept before, in order.

    A fine-tune may add a language token (``<|xx|>``) that the model and tokenizer take, but that
    faster-whisper's fixed list refuses; the list is module state, so it is extended in place.
    """
    known = _codes(HOLDERS[0])
    for holder in HOLDERS[1:]:
        _codes(holder)  # checked before anything is patched
    extra = tuple(dict.fromkeys(code for code in codes if code not in known))
    if extra:
        for holder in HOLDERS:
            setattr(importlib.import_module(holder), PRIVATE_NAME, known + extra)
    return extra


def _codes(holder: str) -> tuple[str, ...]:
    codes = getattr(importlib.import_module(holder), PRIVATE_NAME, None)
    if not isinstance(codes, tuple) or not all(isinstance(code, str) for code in codes):
        import faster_whisper

        raise RuntimeError(
            f"faster-whisper {faster_whisper.__version__}: {holder}.{PRIVATE_NAME} is "
            f"{type(codes).__name__}, not the tuple of language codes whisperwire.languages "
            "expects; this release is not supported (see faster-whisper's bound in pyproject.toml)"
        )
    return codes
