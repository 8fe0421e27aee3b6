"""A session's glue with a scripted model: message order and failed decodes.

No socket and no model: the session's VAD is replaced by scripted probabilities, Whisper by
the scripted transcriber, the client by a recorder whose sends take time. The scheduler is the
real one (one worker thread).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_backends import FakeBackend
from forward_support import make_config
from scripted import FakeWhisper, script, vad_probs

from whisperwire import decodes as decodes_module
from whisperwire import protocol as proto
from whisperwire.endpointing import VAD_CHUNK
from whisperwire.forward import Forwarder
from whisperwire.journal import Journal, JournalBook, Update
from whisperwire.policy import DecodeRequest, PolicyConfig
from whisperwire.scheduler import Scheduler
from whisperwire.services import Services
from whisperwire.session import Session
from whisperwire.words import Hypothesis

WORDS = [
    "so",
    "we",
    "beat",
    "on",
    "boats",
    "against",
    "the",
    "current",
    "borne",
    "back",
    "ceaselessly",
    "into",
    "the",
    "past",
]


class ScriptedEngine:
    name = "scripted"
    multilingual = False
    languages = frozenset({"en"})
    batch = 1  # no batched decodes

    def __init__(self, whisper: FakeWhisper, fails: Callable[[DecodeRequest, int], bool]) -> None:
        """`fails(request, call)`, call counting from 1: should this decode raise?"""
        self.whisper = whisper
        self.fails = fails
        self.calls = 0

    def decode(self, request: DecodeRequest) -> Hypothesis:
        self.calls += 1
        if self.fails(request, self.calls):
            raise RuntimeError("the model fell over")
        return self.whisper(request)


class ScriptedPipeline:
    """Stands in for the session's resampler + Silero VAD: s16le bytes -> silence + scripted
    speech probabilities, one per whole 512-sample chunk, as the real pipeline gives them."""

    def __init__(self, probs: np.ndarray) -> None:
        self.probs = probs
        self.samples = 0

    def process(self, data: bytes) -> tuple[np.ndarray, np.ndarray]:
        before = self.samples // VAD_CHUNK
        self.samples += len(data) // 2
        return np.zeros(len(data) // 2, np.float32), self.probs[before : self.samples // VAD_CHUNK]

    def drain(self) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros(0, np.float32), np.zeros(0)


def scripted_services(engine: ScriptedEngine, scheduler: Scheduler, **extra: Any) -> Services:
    return Services(
        engine=engine,  # type: ignore[arg-type]
        scheduler=scheduler,
        policy_config=PolicyConfig(),
        default_language="en",
        default_task="transcribe",
        max_message_bytes=1 << 20,
        **extra,
    )


def converse(
    fails: Callable[[DecodeRequest, int], bool], speech: list[tuple[float, float]]
) -> list[dict[str, Any]]:
    """Stream 8 s of scripted speech in 100 ms frames, then `end`; the client's messages."""
    received: list[dict[str, Any]] = []

    async def send_text(frame: str) -> None:
        message = json.loads(frame)
        received.append(message)
        await asyncio.sleep(0.01)  # a slow client: sends take time, audio and decodes go on

    async def close(code: int, reason: str) -> None:
        received.append({"type": "closed", "code": code})

    async def main() -> None:
        scheduler = Scheduler(workers=1)
        whisper = FakeWhisper(script(WORDS, 0.5, per_word=0.45))
        services = scripted_services(ScriptedEngine(whisper, fails), scheduler)
        session = Session(services, send_text, close)
        await session.open()
        probs = vad_probs(8.0, speech)
        session._pipeline = ScriptedPipeline(probs)  # type: ignore[assignment]
        frame = bytes(3200)  # 100 ms of s16le
        for _ in range(len(probs) * VAD_CHUNK // 1600):
            await session.receive_bytes(frame)
            await asyncio.sleep(0.002)
        await session.receive_text(json.dumps({"type": "end"}))
        await asyncio.wait_for(session.out.ended.wait(), 30)
        await session.closed()
        scheduler.close()

    asyncio.run(main())
    return received


def finals(messages: list[dict[str, Any]]) -> str:
    return " ".join(m["text"] for m in messages if m["type"] == "final")


SPEECH = [(0.5, 7.3)]


def test_a_final_is_never_followed_by_a_partial_of_its_segment() -> None:
    messages = converse(lambda request, call: False, SPEECH)
    assert messages[0]["type"] == "state" and messages[0]["state"] == "ready"
    final_ids: set[int] = set()
    for message in messages:
        if message["type"] == "final":
            assert message["segment_id"] not in final_ids
            assert all(message["segment_id"] > done for done in final_ids)
            final_ids.add(message["segment_id"])
        elif message["type"] == "partial":
            assert message["segment_id"] not in final_ids, "a stale partial after its final"
    assert [m["type"] for m in messages[-2:]] == ["end", "closed"]
    assert finals(messages) == " ".join(WORDS)
    assert sum(m["type"] == "partial" for m in messages) >= 3


def test_failed_decodes_are_retried_and_lose_no_words(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decodes_module, "RETRY_DELAY_S", 0.01)

    def fails(request: DecodeRequest, call: int) -> bool:
        return call % 3 != 0  # two failures before every success, finals included

    messages = converse(fails, SPEECH)
    errors = [m for m in messages if m["type"] == "error"]
    assert errors and all(e["code"] == proto.TRANSCRIPTION_ERROR for e in errors)
    assert all("kept and decoded again" in e["message"] for e in errors)
    assert finals(messages) == " ".join(WORDS)
    assert [m["type"] for m in messages[-2:]] == ["end", "closed"]


def test_a_window_that_never_decodes_is_reported_by_its_time_span(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When the model keeps failing, the session still ends, and says which audio it lost."""
    monkeypatch.setattr(decodes_module, "RETRY_DELAY_S", 0.01)
    messages = converse(lambda request, call: True, SPEECH)
    lost = [
        m for m in messages if m["type"] == "error" and "could not be transcribed" in m["message"]
    ]
    assert len(lost) == 1
    assert "after 3 attempts" in lost[0]["message"] and " s to " in lost[0]["message"]
    assert finals(messages) == ""
    assert [m["type"] for m in messages[-2:]] == ["end", "closed"]


def test_a_bug_applying_a_decode_is_said_with_its_time_span_and_the_session_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An exception of the policy's (a bug) on a decode's result is an INTERNAL_ERROR naming
    the audio it concerned; the session goes on to its `end`."""
    from whisperwire.policy import Policy

    real_apply = Policy.apply
    calls = [0]

    def apply(self: Policy, request: DecodeRequest, hypothesis: Any) -> None:
        real_apply(self, request, hypothesis)
        calls[0] += 1
        if calls[0] == 2:
            raise AssertionError("a policy bug")

    monkeypatch.setattr(Policy, "apply", apply)
    messages = converse(lambda request, call: False, SPEECH)
    errors = [m for m in messages if m["type"] == "error"]
    assert len(errors) == 1 and errors[0]["code"] == proto.INTERNAL_ERROR
    assert "incident" in errors[0]["message"] and " s (incident" in errors[0]["message"]
    assert "a policy bug" not in errors[0]["message"]
    assert [m["type"] for m in messages[-2:]] == ["end", "closed"]


@pytest.mark.parametrize("can_abort", [True, False])
def test_a_client_that_stops_reading_is_dropped_after_the_write_timeout(can_abort: bool) -> None:
    """A send that never completes (the client's buffers are full) drops the connection once
    `write_timeout_s` passes (or closes it with 1008 where the transport cannot be dropped);
    nothing after it waits on that client."""
    events: list[tuple[str, float]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()

        async def send_text(frame: str) -> None:
            events.append(("send", loop.time() - started))
            await asyncio.Event().wait()  # never returns: nobody reads

        async def close(code: int, reason: str) -> None:
            events.append((f"close {code} {reason}", loop.time() - started))

        scheduler = Scheduler(workers=1)
        engine = ScriptedEngine(FakeWhisper([]), lambda r, c: False)
        services = scripted_services(engine, scheduler, write_timeout_s=0.2)

        def abort() -> None:
            events.append(("abort", loop.time() - started))

        session = Session(services, send_text, close, abort=abort if can_abort else None)
        await session.open()  # its greeting is the send that hangs
        for _ in range(3):
            await session.receive_text(json.dumps({"type": "ping"}))
        await asyncio.sleep(0.6)
        events.append(("waited", loop.time() - started))
        await session.closed()
        scheduler.close()

    asyncio.run(main())
    sends = [at for what, at in events if what == "send"]
    ends = [(what, at) for what, at in events if what not in ("send", "waited")]
    assert len(sends) == 1, "after the timeout nothing more is sent to that client"
    expected = "abort" if can_abort else "close 1008 the client does not read its messages"
    assert len(ends) == 1 and ends[0][0] == expected
    assert ends[0][1] >= 0.2, "not before the write timeout"
    # and on its own: before the test, three timeouts later, ends the session itself
    assert events.index(ends[0]) < events.index(next(e for e in events if e[0] == "waited"))


def test_shutdown_while_audio_arrives_finalises_once_without_errors() -> None:
    """The server's shutdown ends the session while frames are still being fed: no frame is
    fed after the end (no INTERNAL_ERROR), no flood of errors for frames in flight, and the
    client gets its finals, `end`, then close 1001."""
    received: list[dict[str, Any]] = []

    async def send_text(frame: str) -> None:
        received.append(json.loads(frame))

    async def close(code: int, reason: str) -> None:
        received.append({"type": "closed", "code": code})

    async def main() -> None:
        scheduler = Scheduler(workers=1)
        whisper = FakeWhisper(script(WORDS, 0.5, per_word=0.45))
        services = scripted_services(ScriptedEngine(whisper, lambda r, c: False), scheduler)
        session = Session(services, send_text, close)
        await session.open()
        probs = vad_probs(8.0, SPEECH)
        session._pipeline = ScriptedPipeline(probs)  # type: ignore[assignment]
        frames = [session.receive_bytes(bytes(3200)) for _ in range(len(probs) * VAD_CHUNK // 1600)]
        half = len(frames) // 2
        for frame in frames[:half]:
            await frame
        late = [asyncio.create_task(f) for f in frames[half:]]  # in flight during shutdown
        await session.shutdown(timeout=20)
        await asyncio.gather(*late)  # none of them raises
        await session.closed()
        scheduler.close()

    asyncio.run(main())
    kinds = [m["type"] for m in received]
    assert "error" not in kinds, [m for m in received if m["type"] == "error"]
    assert kinds[-2:] == ["end", "closed"] and received[-1]["code"] == 1001
    assert finals(received), "the audio fed before the shutdown is transcribed"


class BookLink:
    """A replica's link to a board of journals, in memory (`journal.JournalLink`): what
    `ray_sessions.BoardLink` does over Ray, without the transport. `alive` says whether a
    holder lives, as the board asks Ray."""

    def __init__(self, book: JournalBook, holder: str, alive: Callable[[str], bool]) -> None:
        self.book, self.holder, self.alive = book, holder, alive
        self.queued: list[Update | str] = []  # reach the board when flushed (or forgotten)

    def record(self, update: Update) -> None:
        self.queued.append(update)

    def forget(self, session_id: str) -> None:
        self.queued.append(session_id)
        self._send()

    async def flushed(self) -> None:
        await asyncio.sleep(0.005)  # a round trip
        self._send()

    def _send(self) -> None:
        for item in self.queued:
            if isinstance(item, str):
                self.book.forget(item, self.holder)
            else:
                self.book.record(item, 0.0)
        self.queued.clear()

    async def claim(self, session_id: str) -> Journal | None:
        holder = self.book.holder(session_id)
        if holder is None or holder == self.holder or self.alive(holder):
            return None
        return self.book.take(session_id, holder, self.holder, 0.0)


def test_a_session_whose_replica_died_goes_on_elsewhere_with_every_word_once(
    tmp_path: Path,
) -> None:
    """Replica a streams 4 s of a session and dies; its client had every final that the
    board had (a final leaves once the board has it) and resumes on replica b, which takes
    the journal over: the finals it missed come again, audio from the greeting's offset is
    decoded after the last final words, and the two connections say every word once. Each
    replica forwards to one backend: it gets every final once, in batches numbered apart."""
    book = JournalBook(keep_s=60.0)
    backend = FakeBackend().start()
    speech = vad_probs(9.0, [(0.5, 7.3)])
    spoken = script(WORDS, 0.5, per_word=0.45)
    first: list[dict[str, Any]] = []
    second: list[dict[str, Any]] = []
    dead: set[str] = set()

    def client(received: list[dict[str, Any]]) -> Callable[[str], Any]:
        async def send_text(frame: str) -> None:
            message = json.loads(frame)
            if message["type"] == "final":  # the board had it before the client
                journal = book._entries[message_session[0]].finals
                assert message["segment_id"] in journal, message
            received.append(message)

        return send_text

    async def close(code: int, reason: str) -> None:
        pass

    message_session: list[str] = []

    async def main() -> None:
        scheduler = Scheduler(workers=1)
        engine = ScriptedEngine(FakeWhisper(spoken, unstable_tail=False), lambda r, c: False)
        forwarders = []
        for name in ("a", "b"):  # every final a batch of its own
            config = make_config(backend.url("/hook"), tmp_path / name, max_messages=1)
            forwarders.append(Forwarder(config))
            await forwarders[-1].start()
        window: dict[str, Any] = {"resume_window_s": 30.0, "forward_wait_s": 5.0}
        on_a = scripted_services(
            engine,
            scheduler,
            journal=BookLink(book, "a", lambda h: h not in dead),
            forwarder=forwarders[0],
            **window,
        )
        a = Session(on_a, client(first), close)
        message_session.append(a.id)
        await a.open()
        a._pipeline = ScriptedPipeline(speech)  # type: ignore[assignment]
        for _ in range(40):  # 4 s of audio, decoded as it comes
            await a.receive_bytes(bytes(3200))
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        for task in list(a.decodes.running):  # replica a dies: nothing more of it runs
            task.cancel()
        a.out.closed = True
        dead.add("a")
        last = max(m["segment_id"] for m in first if m["type"] == "final")
        on_b = scripted_services(
            engine,
            scheduler,
            journal=BookLink(book, "b", lambda h: h not in dead),
            forwarder=forwarders[1],
            **window,
        )
        journal = await on_b.journal.claim(a.id)
        assert journal is not None and journal.offset_s <= 4.0
        b = Session(on_b, client(second), close, taken_over=journal)
        await b.open_taken_over(last - 1)  # the client missed its last final
        offset = int(journal.offset_s * 16000) // VAD_CHUNK
        b._pipeline = ScriptedPipeline(speech[offset:])  # type: ignore[assignment]
        for _ in range((len(speech) - offset) * VAD_CHUNK // 1600):
            await b.receive_bytes(bytes(3200))
            await asyncio.sleep(0.002)
        await b.receive_text(json.dumps({"type": "end"}))
        await asyncio.wait_for(b.out.ended.wait(), 30)
        await b.closed()
        for forwarder in forwarders:
            assert await forwarder.drain(timeout_s=10)
            await forwarder.close()
        scheduler.close()
        assert book.holder(a.id) is None, "forgotten once it ended"

    try:
        asyncio.run(main())
    finally:
        backend.stop()
    greeting = second[0]
    assert greeting["resumed"] is True and greeting["audio_offset"] <= 4.0
    had = {m["segment_id"]: m["text"] for m in first if m["type"] == "final"}
    again = [m for m in second if m["type"] == "final"]
    assert again[0]["segment_id"] == max(had), "the final the client missed comes again"
    said = {**had, **{m["segment_id"]: m["text"] for m in again}}
    assert sorted(said) == list(range(len(said)))
    assert " ".join(said[i] for i in sorted(said)) == " ".join(WORDS)
    assert second[-1]["type"] == "end"
    forwarded = [request.json() for request in backend.requests]
    ids = sorted(segment["segment_id"] for body in forwarded for segment in body["segments"])
    assert ids == sorted(said), "the backend gets every final once"
    numbers = [body["batch"] for body in forwarded]
    assert len(set(numbers)) == len(numbers), f"batch numbers used twice: {numbers}"
