"""A session's ordered writer: events in order, stale partials replaced, finals replayed on a
resume, `end` last and then the close."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone
from typing import Any

from whisperwire import protocol as proto
from whisperwire.outbox import Connection, Outbox
from whisperwire.protocol import events as ev

CLOCK = datetime(2026, 11, 21, 20, 15, 3, tzinfo=timezone.utc)


def final(segment_id: int) -> ev.Final:
    return ev.Final(
        segment_id=segment_id, text=f"s{segment_id}", start=0.0, end=1.0, language="en", words=()
    )


def partial(segment_id: int, text: str) -> ev.Partial:
    return ev.Partial(segment_id=segment_id, text=text, stable="", start=0.0, end=1.0)


class Client:
    """A connection that records what reaches it; `gate` holds its sends until set."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def send_text(self, frame: str) -> None:
        await self.gate.wait()
        self.received.append(json.loads(frame))

    async def close(self, code: int, reason: str) -> None:
        self.received.append({"type": "closed", "code": code})

    def connection(self) -> Connection:
        return Connection(self.send_text, self.close)

    def kinds(self) -> list[str]:
        return [m.get("text", m["type"]) for m in self.received]


def outbox(client: Client) -> Outbox:
    codec = proto.Codec(clock=lambda: CLOCK)
    return Outbox("s1", codec, client.connection(), resumable=lambda: True)


def test_a_newer_partial_replaces_a_queued_one_and_end_goes_last() -> None:
    client = Client()

    async def main() -> None:
        out = outbox(client)
        client.gate.clear()  # the client reads nothing yet: events queue
        out.start()
        out.put(ev.Pong())
        ended = ev.Ended(duration=1.0, segments=1)
        for event in (partial(0, "a"), partial(0, "a b"), final(0), ended, ev.Pong()):
            out.put(event)
        client.gate.set()
        await asyncio.wait_for(out.ended.wait(), 5)
        await out.stop()

    asyncio.run(main())
    assert client.kinds() == ["state", "a b", "s0", "state", "end", "closed"]
    assert all(m["timestamp"] == "2026-11-21T20:15:03.000Z" for m in client.received[:-1])


def test_a_client_that_resumes_gets_the_finals_it_missed_then_the_rest() -> None:
    first, second = Client(), Client()

    async def main() -> None:
        out = outbox(first)
        out.start()
        for segment_id in range(3):
            out.put(final(segment_id))
        while len(first.received) < 3:
            await asyncio.sleep(0.01)
        out.detach()  # the connection dropped; the writer holds what comes next
        out.put(final(3))
        await asyncio.sleep(0.05)
        assert len(first.received) == 3 and len(second.received) == 0
        missed = out.missed(last_segment=0)
        assert [f.segment_id for f in missed] == [1, 2]
        await out.resume(second.connection(), [ev.Pong(), *missed])
        out.put(ev.Ended(duration=4.0, segments=4))
        await asyncio.wait_for(out.ended.wait(), 5)
        await out.stop()

    asyncio.run(main())
    assert first.kinds() == ["s0", "s1", "s2"]
    assert second.kinds() == ["state", "s1", "s2", "s3", "end", "closed"]
