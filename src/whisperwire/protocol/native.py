"""The native dialect (`format=json`): JSON objects both ways.

Client frames are objects with a `type`; events are encoded generically from their fields
(see `events`), followed by a `timestamp` from the injected clock.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timezone
from functools import cache
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from whisperwire.protocol import errors as err
from whisperwire.protocol import messages as msg
from whisperwire.protocol.dialect import Clock, Dialect
from whisperwire.protocol.events import DIGITS, HIDDEN, UNSET, ServerEvent

if TYPE_CHECKING:
    from whisperwire.protocol.codec import Codec

MESSAGE_TYPES = "config, flush, end, eof, ping, status, audio"

# --------------------------------------------------------------------------- events -> frames


def timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC to the millisecond: `2026-11-21T20:15:03.120Z`."""
    moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@cache
def _plan(cls: type) -> tuple[tuple[str, int | None], ...]:
    """A dataclass's wire fields, in order, each with the decimals it is rounded to."""
    fields = dataclasses.fields(cls)
    return tuple((f.name, f.metadata.get(DIGITS)) for f in fields if not f.metadata.get(HIDDEN))


def _fields(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, digits in _plan(type(obj)):
        value = getattr(obj, name)
        if value is UNSET:
            continue
        if digits is not None:
            value = round(float(value), digits)
        elif not isinstance(value, _PLAIN):
            value = _value(value)
        out[name] = value
    return out


_PLAIN = (str, int, float, type(None), list, dict)  # sent as they are


def _value(value: Any) -> Any:
    if isinstance(value, tuple):  # of events' parts: words, segments
        return [item if isinstance(item, _PLAIN) else _value(item) for item in value]
    if isinstance(value, BaseModel):
        return value.model_dump()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _fields(value)
    return value


def payload(event: ServerEvent) -> dict[str, Any]:
    """The event as the JSON object it is sent as, without its `timestamp`."""
    return {"type": event.TYPE, **_fields(event)}


def encode(event: ServerEvent, clock: Clock) -> str:
    body = {**payload(event), "timestamp": timestamp(clock())}
    text = json.dumps(body, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate a client sent (in an id): escape it
        return json.dumps(body, ensure_ascii=True)
    return text


def encode_native(event: ServerEvent, clock: Clock) -> str | None:
    """`encode`, for the events the native dialect sends (not another dialect's alone)."""
    return encode(event, clock) if event.NATIVE else None


# --------------------------------------------------------------------------- frames -> messages


def read(text: str, codec: Codec) -> msg.ClientMessage:
    """A text frame -> the client message it is; each failure is a contract error code."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise err.ProtocolError(err.INVALID_JSON, f"text frame is not valid JSON: {exc}") from None
    except RecursionError:
        raise err.ProtocolError(err.INVALID_JSON, "text frame nests JSON too deeply") from None
    except ValueError:  # Python's limit on the digits of an integer
        raise err.ProtocolError(
            err.INVALID_JSON, "text frame has a number of more than 4300 digits"
        ) from None
    if not isinstance(obj, dict):
        raise err.ProtocolError(
            err.INVALID_MESSAGE, "a message must be a JSON object with a 'type'"
        )
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise err.ProtocolError(err.INVALID_MESSAGE, "message has no string field 'type'")
    if kind == "config":
        return codec.configure({k: v for k, v in obj.items() if k != "type"})
    if kind == "flush":
        return msg.Flush()
    if kind in ("end", "eof"):
        return msg.End()
    if kind == "ping":
        return msg.Ping()
    if kind == "status":
        return msg.Status()
    if kind == "audio":
        return codec.clip(obj)
    raise err.ProtocolError(
        err.UNKNOWN_MESSAGE_TYPE,
        f"unknown message type {err.shown(kind)}; expected one of {MESSAGE_TYPES}",
    )


DIALECT = Dialect("json", encode_native, read)
