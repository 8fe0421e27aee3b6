"""One attempt to send a batch, and the retrying of transient failures (tenacity).

Connection errors, timeouts, 429 and 5xx are retried with capped exponential backoff and
jitter, or after the reply's ``Retry-After`` (up to ``max_retry_after_s``); other
failures are permanent.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_result, wait_exponential

from whisperwire.forward.config import ForwardConfig
from whisperwire.forward.formats import parse_body


@dataclass
class Outcome:
    kind: str  # "ok" | "retry" | "fatal"
    status: int | None
    error: str | None
    body: Any = None
    retry_after: float | None = None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:  # pragma: no cover - older Pythons returned None
        return None
    if when.tzinfo is None:  # HTTP-dates are GMT
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


async def post(client: httpx.AsyncClient, url: str, body: bytes, headers: httpx.Headers) -> Outcome:
    """POST once and classify what happened."""
    try:
        resp = await client.post(url, content=body, headers=headers)
    except (httpx.UnsupportedProtocol, httpx.LocalProtocolError, httpx.InvalidURL) as exc:
        return Outcome("fatal", None, f"{type(exc).__name__}: {exc}")
    except (
        httpx.TimeoutException,
        httpx.NetworkError,
        httpx.RemoteProtocolError,
        httpx.ProxyError,
    ) as exc:
        return Outcome("retry", None, f"{type(exc).__name__}: {exc}".rstrip(": "))
    except httpx.HTTPError as exc:
        return Outcome("fatal", None, f"{type(exc).__name__}: {exc}")
    status = resp.status_code
    body_value = parse_body(resp)
    if 200 <= status < 300:
        return Outcome("ok", status, None, body_value)
    reason = f"HTTP {status} {resp.reason_phrase}".rstrip()
    if status == 429 or status >= 500:
        return Outcome(
            "retry",
            status,
            reason,
            body_value,
            retry_after=parse_retry_after(resp.headers.get("retry-after")),
        )
    return Outcome("fatal", status, f"{reason} (not retried)", body_value)


class _Backoff:
    """tenacity's wait and sleep for one batch: ``Retry-After`` when the backend gave
    one, else capped exponential backoff with jitter.  A backoff sleep that began before
    ``closing`` was set is cut short by it, once (a ``Retry-After`` is always waited)."""

    def __init__(self, cfg: ForwardConfig, closing: asyncio.Event) -> None:
        self._cfg = cfg
        self._closing = closing
        self._exponential = wait_exponential(
            multiplier=cfg.initial_backoff_s, max=cfg.max_backoff_s
        )
        self._interruptible = True

    def wait(self, state: RetryCallState) -> float:
        assert state.outcome is not None
        retry_after = state.outcome.result().retry_after
        self._interruptible = retry_after is None
        if retry_after is not None:
            return min(retry_after, self._cfg.max_retry_after_s)
        return self._exponential(state) * random.uniform(0.5, 1.0)

    async def sleep(self, delay: float) -> None:
        if not self._interruptible or self._closing.is_set():
            await asyncio.sleep(delay)
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._closing.wait(), delay)


def retrying(
    cfg: ForwardConfig,
    closing: asyncio.Event,
    attempts: Callable[[], int],
    before_sleep: Callable[[RetryCallState], None],
) -> AsyncRetrying:
    """Retry an attempt whose :class:`Outcome` is ``retry`` until it is not, or until
    ``attempts()`` (the batch's attempts, across restarts) reaches ``max_attempts``; then
    the last outcome is returned.  An exception in the attempt is not retried."""
    backoff = _Backoff(cfg, closing)

    def stop(_: RetryCallState) -> bool:
        return cfg.max_attempts is not None and attempts() >= cfg.max_attempts

    def last_outcome(state: RetryCallState) -> Outcome:
        assert state.outcome is not None
        return state.outcome.result()

    return AsyncRetrying(
        retry=retry_if_result(lambda outcome: outcome.kind == "retry"),
        stop=stop,
        wait=backoff.wait,
        sleep=backoff.sleep,
        before_sleep=before_sleep,
        retry_error_callback=last_outcome,
    )
