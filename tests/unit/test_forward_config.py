"""Tests of the forwarder's settings: headers, wire format names, Retry-After, ForwardConfig."""

from __future__ import annotations

import email.utils
import time
from pathlib import Path
from typing import Any

import pytest

from whisperwire.forward import ForwardConfig, parse_header, parse_retry_after, resolve_format

# ----------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Authorization: Bearer sk-abc:def", ("Authorization", "Bearer sk-abc:def")),
        ("X-Api-Key:secret", ("X-Api-Key", "secret")),
        ("  X-Trace :  v 1  ", ("X-Trace", "v 1")),
        ("X-Empty:", ("X-Empty", "")),
    ],
)
def test_parse_header_ok(raw: str, expected: tuple[str, str]) -> None:
    assert parse_header(raw) == expected


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ("Authorization Bearer xyz", "Authorization Bearer xyz"),
        ("Bad Name: x", "Bad Name"),
        (": value", "''"),
        ("X-Ok: a\r\nInjected: b", "X-Ok"),
        ("Content-Length: 5", "Content-Length"),
        ("X-Bad-(Name): v", "X-Bad-(Name)"),
    ],
)
def test_parse_header_bad_names_the_header(raw: str, named: str) -> None:
    with pytest.raises(ValueError, match="header") as info:
        parse_header(raw)
    assert named in str(info.value)


def test_bad_header_value_is_not_echoed() -> None:
    with pytest.raises(ValueError) as info:
        parse_header("Authorization: Bearer sk-SECRET\r\nX-Injected: 1")
    assert "Authorization" in str(info.value)
    assert "SECRET" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "fmt", "expected"),
    [
        ("http://127.0.0.1:8080/completion", "auto", "llama"),
        ("http://127.0.0.1:8080/completion/", "auto", "llama"),
        ("http://h/v1/chat/completions", "auto", "openai"),
        ("https://api.example.com/v1/chat/completions?x=1", "auto", "openai"),
        ("http://h/v1/completions", "auto", "json"),
        ("http://h/hook", "auto", "json"),
        ("http://h/", "auto", "json"),
        ("http://h/completion", "text", "text"),
        ("http://h/hook", "LLAMA", "llama"),
        ("http://h/hook", "openai", "openai"),
    ],
)
def test_resolve_format(url: str, fmt: str, expected: str) -> None:
    assert resolve_format(url, fmt) == expected


def test_resolve_format_unknown() -> None:
    with pytest.raises(ValueError, match="xml"):
        resolve_format("http://h/", "xml")


@pytest.mark.parametrize(
    "overrides",
    [
        {"max_messages": 0},
        {"format": "xml"},
        {"prompt_template": "{prompt}"},
        {"prompt_template": "no field at all"},
        {"prompt_template": "{text"},
        {"url": "ftp://example.com/x"},
        {"url": "localhost:8080/completion"},
        {"headers": ["NoColonHere"]},
        {"max_attempts": 0},
        {"llama_n_predict": 0},
        {"max_outbox_mb": -1},
    ],
)
def test_config_validation(tmp_path: Path, overrides: dict[str, Any]) -> None:
    kwargs: dict[str, Any] = {"url": "http://127.0.0.1:9/hook", "data_dir": tmp_path}
    kwargs.update(overrides)
    with pytest.raises(ValueError):
        ForwardConfig(**kwargs)


def test_config_normalises_headers(tmp_path: Path) -> None:
    cfg = ForwardConfig(
        url="http://h/completion",
        data_dir=tmp_path,
        headers=["Authorization: Bearer k", ("X-Other", "v")],
        format=" Auto ",
    )
    assert cfg.headers == (("Authorization", "Bearer k"), ("X-Other", "v"))
    assert cfg.header_pairs == [("Authorization", "Bearer k"), ("X-Other", "v")]
    assert cfg.resolved_format == "llama"
    assert cfg.max_messages == 1


def test_parse_retry_after() -> None:
    now = time.time()
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
    assert parse_retry_after("garbage") is None
    assert parse_retry_after("3") == 3.0
    date = email.utils.formatdate(now + 10, usegmt=True)
    assert parse_retry_after(date, now=now) == pytest.approx(10, abs=1.01)
    past = email.utils.formatdate(now - 100, usegmt=True)
    assert parse_retry_after(past, now=now) == 0.0
