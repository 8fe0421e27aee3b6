"""whisperwire.languages against the installed faster-whisper, whose private list it relies on."""

from __future__ import annotations

import importlib
import types
from collections.abc import Iterator

import faster_whisper
import pytest
from faster_whisper.tokenizer import Tokenizer
from tokenizers import Tokenizer as HfTokenizer
from tokenizers import models

from whisperwire.languages import (
    HOLDERS,
    PRIVATE_NAME,
    admit_languages,
    whisper_languages,
)


@pytest.mark.parametrize("holder", HOLDERS)
def test_faster_whisper_still_holds_its_private_language_list(holder: str) -> None:
    codes = getattr(importlib.import_module(holder), PRIVATE_NAME, None)
    assert isinstance(codes, tuple) and codes and all(isinstance(c, str) for c in codes), (
        f"faster-whisper {faster_whisper.__version__}: {holder}.{PRIVATE_NAME} is "
        f"{type(codes).__name__}, no longer a tuple of language codes; whisperwire.languages "
        "(whisper_languages, admit_languages) needs updating, and the faster-whisper bound in "
        "pyproject.toml"
    )


@pytest.fixture
def restored() -> Iterator[None]:
    """Whatever a test admits is taken back: the lists are process-wide state."""
    modules = [importlib.import_module(holder) for holder in HOLDERS]
    saved = [getattr(module, PRIVATE_NAME) for module in modules]
    yield
    for module, codes in zip(modules, saved, strict=True):
        setattr(module, PRIVATE_NAME, codes)


def multilingual_tokenizer(*languages: str) -> HfTokenizer:
    tokenizer = HfTokenizer(models.WordLevel({"a": 0}, unk_token="a"))
    tokenizer.add_special_tokens(
        ["<|startoftranscript|>", *(f"<|{code}|>" for code in languages), "<|transcribe|>"]
    )
    return tokenizer


def supported_languages() -> list[str]:
    """``WhisperModel.supported_languages`` of a multilingual model, without loading one."""
    multilingual = types.SimpleNamespace(model=types.SimpleNamespace(is_multilingual=True))
    return faster_whisper.WhisperModel.supported_languages.fget(multilingual)


def test_whisper_languages_are_the_ones_faster_whisper_accepts() -> None:
    languages = whisper_languages()
    assert {"en", "de", "fr", "ja", "yue"} <= languages
    assert len(languages) >= 99
    assert languages == frozenset(supported_languages())
    assert "xx" not in languages


def test_admitted_codes_are_accepted_by_faster_whisper(restored: None) -> None:
    hf = multilingual_tokenizer("en", "xx")
    with pytest.raises(ValueError, match="'xx' is not a valid language code"):
        Tokenizer(hf, multilingual=True, task="transcribe", language="xx")

    assert admit_languages(["en", "xx", "yy", "xx"]) == ("xx", "yy")

    accepted = Tokenizer(hf, multilingual=True, task="transcribe", language="xx")
    assert accepted.language == hf.token_to_id("<|xx|>")
    assert {"xx", "yy", "en"} <= whisper_languages()
    assert supported_languages()[-2:] == ["xx", "yy"]
    assert admit_languages(["xx", "de"]) == ()  # nothing new the second time


@pytest.mark.parametrize("change", ["removed", "made a list"])
@pytest.mark.parametrize("holder", HOLDERS)
def test_a_moved_or_changed_list_is_an_error_naming_it_and_the_version(
    holder: str, change: str, restored: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = importlib.import_module(holder)
    if change == "removed":
        monkeypatch.delattr(module, PRIVATE_NAME)
    else:
        monkeypatch.setattr(module, PRIVATE_NAME, list(getattr(module, PRIVATE_NAME)))
    with pytest.raises(RuntimeError) as excinfo:
        admit_languages(["xx"])
    message = str(excinfo.value)
    assert f"{holder}.{PRIVATE_NAME}" in message, message
    assert f"faster-whisper {faster_whisper.__version__}" in message, message
    for other in HOLDERS:  # nothing was half patched
        assert "xx" not in getattr(importlib.import_module(other), PRIVATE_NAME, ())
