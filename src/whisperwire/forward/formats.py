"""The wire formats: a batch as an HTTP request to the backend, and the backend's reply
as the ``forward`` event relayed to the client."""

from __future__ import annotations

import contextlib
import json
from dataclasses import replace
from typing import Any
from urllib.parse import quote

import httpx

from whisperwire.forward.config import ForwardConfig
from whisperwire.forward.outbox import Batch
from whisperwire.protocol.events import ForwardReply

# Longest text of a backend reply we put in a log line.
_LOG_SNIPPET = 500


def _header_safe(value: str) -> str:
    if value.isascii() and value.isprintable():
        return value
    return quote(value, safe="")


def build_request(cfg: ForwardConfig, fmt: str, batch: Batch) -> tuple[bytes, httpx.Headers]:
    """The body and headers that send ``batch`` in wire format ``fmt``."""
    joined = "\n".join(s["text"] for s in batch.segments)
    defaults = {"X-Connection-ID": _header_safe(batch.session_id), "Idempotency-Key": batch.key}
    payload: dict[str, Any]
    if fmt == "text":
        defaults["Content-Type"] = "text/plain"
        body = joined.encode("utf-8")
    else:
        if fmt == "llama":
            payload = {
                "prompt": cfg.prompt_template.format(text=joined),
                "n_predict": cfg.llama_n_predict,
                "stream": False,
            }
        elif fmt == "openai":
            payload = {
                "model": cfg.openai_model,
                "messages": [{"role": "user", "content": cfg.prompt_template.format(text=joined)}],
            }
        else:
            payload = {
                "session_id": batch.session_id,
                "batch": batch.seq,
                "segments": batch.segments,
                "text": joined,
            }
        defaults["Content-Type"] = "application/json"
        body = json.dumps(payload, ensure_ascii=False, default=str).encode("utf-8")
    # User headers win over defaults of the same name; repeated user headers are kept.
    extra = cfg.header_pairs
    overridden = {n.lower() for n, _ in extra}
    headers = [(n, v) for n, v in defaults.items() if n.lower() not in overridden]
    return body, httpx.Headers(headers + extra)


def parse_body(resp: httpx.Response) -> Any:
    """The reply's body: parsed JSON when it is JSON, else its text."""
    ctype = resp.headers.get("content-type", "").lower()
    text = resp.text
    if "json" in ctype or (not ctype and text[:1] in ("{", "[")):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def reply_message(
    batch: Batch, *, status: int | None, response: Any, error: str | None
) -> ForwardReply:
    """The ``forward`` event of a batch that was delivered or failed permanently."""
    return ForwardReply(
        batch=batch.seq,
        segment_ids=[s.get("segment_id") for s in batch.segments],
        status=status,
        response=response,
        error=error,
    )


def delivered_message(fmt: str, batch: Batch, status: int | None, body: Any) -> ForwardReply:
    """The ``forward`` event of a delivered batch: for ``llama``/``openai`` the model's
    content is the ``response`` (an ``error`` when it is missing) and ``body`` the reply."""
    if fmt not in ("llama", "openai"):
        return reply_message(batch, status=status, response=body, error=None)
    content: Any = None
    if fmt == "llama":
        if isinstance(body, dict):
            content = body.get("content")
        where = "'content'"
    else:
        with contextlib.suppress(KeyError, IndexError, TypeError, AttributeError):
            content = body["choices"][0]["message"]["content"]
        where = "'choices[0].message.content'"
    error = None if isinstance(content, str) else f"backend reply has no string {where}"
    msg = reply_message(
        batch, status=status, response=content if isinstance(content, str) else None, error=error
    )
    return replace(msg, body=body)


def snippet(value: Any) -> str:
    """``value`` as text short enough for a log line."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= _LOG_SNIPPET else text[:_LOG_SNIPPET] + "…"
