"""What a dialect is: one mapping of frames to client messages and of events to frames.

A session speaks the dialect its `format` names (`DIALECTS` in `codec`). Each dialect is one
module exporting a `Dialect`; see docs/architecture.md, "Events and dialects".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from whisperwire.protocol.events import ServerEvent
from whisperwire.protocol.messages import ClientMessage

if TYPE_CHECKING:
    from whisperwire.protocol.codec import Codec

Clock = Callable[[], datetime]  # the time an event is sent, timezone-aware


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Dialect:
    name: str  # the `format` that selects it
    # event -> text frame, or None where the dialect does not send that event
    encode: Callable[[ServerEvent, Clock], str | None]
    # a client's text frame (within the size limit) -> a message validated by the codec
    read: Callable[[str, Codec], ClientMessage]
    # for a dialect whose messages name the session (Deepgram's request_id, its options):
    # event -> text frame with the session's codec at hand; used instead of `encode`
    encode_in: Callable[[ServerEvent, Codec], str | None] | None = None
    # for a dialect that may send several frames for one event (OpenAI Realtime's turn end):
    # event -> its frames, with the session's codec at hand; used instead of both above
    encode_many: Callable[[ServerEvent, Codec], list[str]] | None = None
