"""A session's one ordered writer: every event it sends leaves through this outbox, in order.

A stale `partial` can never follow the `final` of its segment (a newer partial replaces a
queued one), the forwarder gets the finals in the order the client does, and `end` goes last.
A client that does not read is dropped, not waited for. While the connection is detached (it
dropped, and the client may resume) the writer waits, holding the first event not yet sent,
and the finals sent are kept to be sent again to the client that resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from whisperwire.forward import Forwarder
from whisperwire.protocol import Codec, native
from whisperwire.protocol import events as ev

log = logging.getLogger("whisperwire.session")

SendText = Callable[[str], Awaitable[None]]
Close = Callable[[int, str], Awaitable[None]]

MAX_OUTBOX = 1000  # events waiting for a client that does not read; then it is dropped
MAX_REPLAY = 1000  # finals sent, kept to send again to a client that resumes
WRITER_DRAIN_S = 5.0  # a closed session's writer hands what is queued to the forwarder


@dataclass
class Connection:
    """The client's end of a session: what the server (ASGI) lets it do."""

    send_text: SendText
    close: Close
    abort: Callable[[], None] | None = None  # drops it at once (no close frame); None: close


class Outbox:
    def __init__(
        self,
        session_id: str,
        codec: Codec,
        connection: Connection,
        resumable: Callable[[], bool],
        forwarder: Forwarder | None = None,
        forward_wait_s: float = 30.0,
        write_timeout_s: float = 60.0,
        sent: Callable[[ev.ServerEvent], None] | None = None,
        journaled: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.session_id = session_id
        self.codec = codec
        self.connection = connection
        self._resumable = resumable  # may a client whose connection dropped come back?
        self._forwarder = forwarder
        self._forward_wait_s = forward_wait_s
        self._write_timeout_s = write_timeout_s or None  # 0: no limit
        self._sent = sent  # told of each event whose frame was written to the client
        # awaited before a final leaves: what another replica needs to go on is on the board
        self._journaled = journaled
        self._items: deque[ev.ServerEvent | None] = deque()  # None: the writer stops
        self._ready = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # a close that cannot be awaited
        self.closed = False  # the connection is gone: nothing more is sent
        self.close_code = (1000, "end of stream")  # the close after `end`
        self.ended = asyncio.Event()  # `end` went out
        self.attached = asyncio.Event()  # cleared while a dropped client may resume
        self.attached.set()
        self._replay: deque[ev.Final] = deque(maxlen=MAX_REPLAY)

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write())

    @property
    def pending(self) -> bool:
        """Events wait to be sent."""
        return bool(self._items)

    def put(self, event: ev.ServerEvent) -> None:
        """Queue `event` behind everything queued before it."""
        if isinstance(event, ev.Partial):  # a newer partial of a segment replaces a queued one
            stale = [
                queued
                for queued in self._items
                if isinstance(queued, ev.Partial) and queued.segment_id == event.segment_id
            ]
            for queued in stale:
                self._items.remove(queued)
        if len(self._items) >= MAX_OUTBOX:
            if not self.closed:
                self._drop_client(f"{MAX_OUTBOX} messages unread")
            if not isinstance(event, ev.Final | ev.Flushed | ev.Ended):
                return  # nobody will read it; what the forwarder needs is kept
        self._items.append(event)
        self._ready.set()

    async def stop(self) -> None:
        """The connection is gone: what is queued still reaches the forwarder, for a while."""
        self.closed = True
        self.attached.set()  # a writer waiting for a resume goes on, to the forwarder
        if self._writer is not None:
            self._items.append(None)
            self._ready.set()
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._writer), WRITER_DRAIN_S)
            self._writer.cancel()

    # ---- resume

    def detach(self) -> None:
        """The connection dropped: the writer waits for `resume` or `stop`."""
        self.attached.clear()

    def drop_connection(self) -> None:
        """Abandon a connection the client has replaced with a new one."""
        self.detach()
        if self.connection.abort is not None:
            self.connection.abort()

    def missed(self, last_segment: int | None) -> list[ev.Final]:
        """The finals sent after `last_segment` (all, if None), which a client that resumes
        may not have received."""
        return [f for f in self._replay if last_segment is None or f.segment_id > last_segment]

    def sent_before(self, finals: tuple[ev.Final, ...]) -> None:
        """Finals another replica sent for this session (it was taken over): sent again, like
        this outbox's own, to the client that resumes."""
        self._replay.extend(finals)

    async def resume(self, connection: Connection, first: list[ev.ServerEvent]) -> None:
        """Go on on a new connection: `first` is sent before the writer goes on (it waits,
        holding the first event not yet sent). A client that does not read it in time ends
        the session."""
        self.connection = connection
        for event in first:
            for frame in self.codec.frames(event):
                await asyncio.wait_for(connection.send_text(frame), self._write_timeout_s)
        self.attached.set()

    # ---- the writer

    async def _write(self) -> None:
        """Forwards and sends the queued events in order, until `end`."""
        while True:
            while not self._items:
                self._ready.clear()
                await self._ready.wait()
            event = self._items.popleft()
            if event is None:
                return
            if isinstance(event, ev.Ended):
                await self._end_with(event)
                return
            await self._deliver(event)

    async def _end_with(self, ended: ev.Ended) -> None:
        """`end` goes last: after the backend's reply to the session (relayed through the
        outbox while the forwarder waits for it) and whatever else was queued meanwhile."""
        await self._deliver(ended, transmit=False)
        while self._items and self._items[0] is not None:
            await self._deliver(self._items.popleft())  # type: ignore[arg-type]
        await self._transmit(ended)
        if not self.closed:
            await self.connection.close(*self.close_code)
        self.closed = True
        self.ended.set()

    def _drop_client(self, why: str) -> None:
        """The client does not read: drop its connection. A close frame would wait behind
        what it has not read, for ever; the session's finals still reach the forwarder."""
        log.warning("session %s: %s; dropping the connection", self.session_id, why)
        self.closed = True
        if self.connection.abort is not None:
            self.connection.abort()
        else:
            task = asyncio.create_task(
                self.connection.close(1008, "the client does not read its messages")
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver(self, event: ev.ServerEvent, transmit: bool = True) -> None:
        try:
            if self._journaled is not None and isinstance(event, ev.Final):
                await self._journaled()
            forwarder = self._forwarder
            if forwarder is not None:
                if isinstance(event, ev.Final):
                    segment = {k: v for k, v in native.payload(event).items() if k != "words"}
                    await forwarder.add_final(self.session_id, segment)
                elif isinstance(event, ev.Flushed):
                    await forwarder.flush(self.session_id)
                elif isinstance(event, ev.Ended):
                    await forwarder.end_session(self.session_id, wait_s=self._forward_wait_s)
            if transmit:
                await self._transmit(event)
        except Exception:  # a bug of ours: the events after it still go out
            log.exception("session %s: could not deliver %s", self.session_id, type(event).__name__)

    async def _transmit(self, event: ev.ServerEvent) -> None:
        frames = self.codec.frames(event)
        if not frames:
            return
        for frame in frames:
            if not await self._send(frame):
                return
        if isinstance(event, ev.Final):
            self._replay.append(event)
        if self._sent is not None:
            self._sent(event)

    async def _send(self, frame: str) -> bool:
        """One frame to the client; False: it could not be sent, and will not be."""
        limit = self._write_timeout_s
        while True:
            await self.attached.wait()  # a dropped connection: until the client resumes
            if self.closed:
                return False
            try:
                await asyncio.wait_for(self.connection.send_text(frame), limit)
            except asyncio.TimeoutError:  # the client stopped reading: free its slot
                self._drop_client(f"a message waited {limit:g} s to be sent")
                return False
            except Exception:  # noqa: BLE001 - the peer went away; the receive loop notices
                if not self._resumable():
                    self.closed = True
                    return False
                self.attached.clear()  # sent again once the client resumes
                continue
            return True
