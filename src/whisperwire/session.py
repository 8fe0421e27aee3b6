"""One connection's glue: codec <-> audio <-> VAD <-> policy <-> scheduler <-> client.

The session owns no decoding rules (those live in `policy`) and parses nothing (that is
`protocol`). It moves data between them, off the event loop wherever work is heavy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any

from whisperwire import protocol as proto
from whisperwire.clips import ClipQueue
from whisperwire.decodes import Decodes
from whisperwire.journal import Journal, SessionJournal
from whisperwire.outbox import Close, Connection, Outbox, SendText
from whisperwire.pipeline import AudioPipeline
from whisperwire.policy import Policy
from whisperwire.protocol import events as ev
from whisperwire.protocol.openai_realtime_session import Settings
from whisperwire.services import Services
from whisperwire.wire import wire_event
from whisperwire.words import Word

log = logging.getLogger("whisperwire.session")


class Session:
    def __init__(
        self,
        services: Services,
        send_text: SendText,
        close: Close,
        query: dict[str, str] | None = None,
        abort: Callable[[], None] | None = None,
        taken_over: Journal | None = None,
    ) -> None:
        """`taken_over`: the journal of a session another replica held, to go on with (its
        query, not `query`)."""
        self.id = taken_over.session_id if taken_over is not None else str(uuid.uuid4())
        self.services = services
        self._tasks: set[asyncio.Task[None]] = set()  # `end` behind clips
        config = proto.StreamConfig(language=services.default_language, task=services.default_task)
        self.codec = proto.Codec(
            config=config,
            languages=services.engine.languages,
            max_message_bytes=services.max_message_bytes,
            clock=services.clock,
            session_id=self.id,
            model=services.engine.name,
        )
        self.metrics = services.metrics.session()
        # One ordered writer: every event leaves through it, in the order made.
        self.out = Outbox(
            self.id,
            self.codec,
            Connection(send_text, close, abort),
            lambda: self.resumable,
            services.forwarder,
            services.forward_wait_s,
            services.write_timeout_s,
            sent=lambda event: self.metrics.sent(event, time.monotonic()),
            journaled=self._journaled,
        )
        self._query = taken_over.query if taken_over is not None else query or {}
        self._taken_over = taken_over
        self._journal: SessionJournal | None = None  # told to the board (Ray Serve)
        self.policy = Policy(services.policy_config)
        self._pipeline: AudioPipeline | None = None
        self._clips: ClipQueue | None = None  # made on the session's first `audio` message
        self.decodes = Decodes(self.id, services, lambda: self.policy, self.out, self._queue_events)
        self._told_backlog = False
        # The audio pipeline and the policy are fed by one task at a time: the receive loop's
        # frames, and `end` (the client's, or the server's on shutdown or idle timeout).
        self._feeding = asyncio.Lock()
        self._stopping = False  # the server is ending the session: late audio is dropped
        self.last_heard = time.monotonic()  # the client's last message
        self.opened = self.last_heard
        self.received_s = 0.0  # seconds of audio received, at the client's sample rate

    # ---- lifecycle

    async def open(self) -> None:
        """Apply query parameters and greet; a bad parameter is an error, not a refusal."""
        await self._start()
        engine = self.services.engine
        config = ev.SessionConfig(
            **self.codec.config.model_dump(),
            max_message_bytes=self.services.max_message_bytes,
            model=engine.name,
            languages="all" if engine.multilingual else sorted(engine.languages),
        )
        message = "ready: send PCM as binary frames, or JSON messages"
        server = self.services.server or ev.UNSET
        await self.send(ev.Ready(session_id=self.id, message=message, config=config, server=server))

    async def open_taken_over(self, last_segment: int | None) -> None:
        """Go on with the session of the journal given at construction, whose replica is
        gone: its settings, then a greeting as on a resume, the finals after `last_segment`
        again, and the audio from the journal's offset, decoded after its last final words."""
        journal = self._taken_over
        assert journal is not None
        self.out.detach()  # the writer waits for the greeting
        await self._start()
        self.codec.config = proto.StreamConfig.model_validate(journal.config)
        self.codec.audio_started = True  # its format stays the stream's
        self._sync_options()
        words = [
            Word(w.word, w.start, w.end, w.probability) for f in journal.finals for w in f.words
        ]
        self.policy.resume_at(journal.offset_s, journal.next_segment, words)
        self.received_s = journal.offset_s
        self.out.sent_before(journal.finals)
        if self._journal is not None:
            self._journal.next_segment = journal.next_segment
        log.info("session %s taken over from its lost replica", self.id)
        connection = self.out.connection
        await self.attach(connection.send_text, connection.close, connection.abort, last_segment)

    async def _start(self) -> None:
        """Start the writer, apply the query and settle the settings."""
        self.out.start()
        try:
            self.codec.apply_query(self._query)
        except proto.ProtocolError as exc:
            await self.send_error(exc.code, f"query parameters: {exc.message}")
        if self.codec.realtime is not None:  # OpenAI Realtime: its VAD is the server's
            policy = self.services.policy_config
            pads = (policy.vad_threshold, policy.speech_pad_s, policy.min_silence_s)
            self.codec.realtime.settings = Settings.for_server(*pads)
        self.metrics.opened(self.codec.dialect.name)
        self._sync_options()
        if self.services.forwarder is not None:
            # A replica forwards a final only once the board has it: its batches, one final
            # at least each, are numbered below the journal's count of finals.
            taken = self._taken_over
            first_batch = taken.next_segment if taken is not None else 0
            self.services.forwarder.attach(self.id, self.send, first_batch)
        link = self.services.journal
        if (
            link is not None
            and self.services.resume_window_s > 0
            and self.codec.dialect.name == "json"
        ):
            self._journal = SessionJournal(self.id, link.holder, self._query)

    @property
    def resumable(self) -> bool:
        """Could a client whose connection dropped now resume this session?"""
        resume = self.services.resume_window_s > 0
        return resume and not self.policy.finished and not self.out.closed

    def detach(self) -> None:
        """The connection dropped before `end`: decoding goes on, and the writer waits for a
        client that resumes (`attach`) or for `closed`."""
        self.out.detach()

    def drop_connection(self) -> None:
        """The client resumes on a new connection before the server noticed the old one
        drop: abandon the old one (its receive loop ends and parks the session)."""
        self.out.drop_connection()

    async def attach(
        self,
        send_text: SendText,
        close: Close,
        abort: Callable[[], None] | None,
        last_segment: int | None,
    ) -> None:
        """A client resumes on a new connection: it is greeted with the audio offset to send
        from, gets again the finals after `last_segment` (all, if None) that were sent
        before the drop, then everything since."""
        self.last_heard = time.monotonic()
        missed = self.out.missed(last_segment)
        greeting = ev.Ready(
            session_id=self.id,
            resumed=True,
            audio_offset=self.received_s,
            message=f"resumed: {len(missed)} final(s) follow again; send audio from "
            f"{self.received_s:.3f} s",
            config=self.codec.config,
            server=self.services.server or ev.UNSET,
        )
        await self.out.resume(Connection(send_text, close, abort), [greeting, *missed])

    async def finalise_unattended(self, timeout: float) -> None:
        """Nobody resumed: finalise the audio received, for the forwarder (nothing is sent)."""
        self.out.closed = True
        self.out.attached.set()
        await self.end_and_close(self.out.close_code, timeout)

    async def closed(self) -> None:
        """The connection is gone: stop work nobody will read."""
        self.decodes.cancel()
        await self.out.stop()  # what is queued still reaches the forwarder
        self.metrics.closed()
        if self._journal is not None and self.services.journal is not None:
            self.services.journal.forget(self.id)
        if self.services.forwarder is not None:
            await self.services.forwarder.end_session(self.id)

    @property
    def ending(self) -> bool:
        """The server is ending this session (shutdown, idle timeout)."""
        return self._stopping

    def idle_out(self, why: str, code: str = proto.IDLE_TIMEOUT) -> Coroutine[Any, Any, None]:
        """A limit of time is reached (quiet too long, or the session too old): the work that
        tells the client, finalises its audio and closes with 1008. The session is `ending`
        from this call on, before that work runs: nobody picks it to end it twice."""
        self._stopping = True
        return self._time_out(why, code)

    async def _time_out(self, why: str, code: str) -> None:
        await self.send_error(code, f"{why}; reconnect to continue")
        await self.end_and_close((1008, code.lower().replace("_", " ")), timeout=10.0)

    async def shutdown(self, timeout: float) -> None:
        """The server is stopping: finalise the audio received, as on `end`, then close.
        Clips stop at their next window and are answered with OVERLOADED: resend them."""
        if self._clips is not None:
            self._clips.stop("the server is shutting down; send it again in a moment")
        await self.end_and_close((1001, "server shutting down"), timeout)

    async def end_and_close(self, close: tuple[int, str], timeout: float) -> None:
        """Finalise the audio received, as on `end` (its finals and `end` are sent), then
        close with `close` (code, reason)."""
        self.out.close_code = close
        self._stopping = True
        await self._end()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.out.ended.wait(), timeout)

    # ---- inbound

    async def receive_bytes(self, data: bytes) -> None:
        self.last_heard = time.monotonic()
        try:
            frame = self.codec.receive_binary(data)
        except proto.ProtocolError as exc:
            self._refuse(exc)
            return
        await self._feed(frame, self.last_heard)

    async def _feed(self, frame: proto.AudioFrame, arrived: float) -> None:
        """A frame of audio (binary, or inside a text frame for OpenAI Realtime) fed."""
        async with self._feeding:  # one frame at a time, never beside `end`'s drain
            if self.policy.finished:
                if not self._stopping:  # a server closing the session says so once
                    await self.send_error(proto.INVALID_MESSAGE, "audio after 'end' is ignored")
                return
            if self._pipeline is None:
                self._pipeline = AudioPipeline(frame.encoding, frame.sample_rate)
            if self.services.load is not None:
                self.services.load.stream_audio(self.id)
            samples, probs = await asyncio.to_thread(self._pipeline.process, frame.data)
            self.policy.feed(samples, probs)
            width = 2 if frame.encoding == "s16le" else 4
            seconds = len(frame.data) / width / frame.sample_rate
            self.received_s += seconds
            self.metrics.audio(seconds, self.received_s, arrived, self.policy.needed_from_s)
        self.decodes.pump()

    async def receive_text(self, text: str) -> None:
        self.last_heard = time.monotonic()
        try:
            message = self.codec.receive_text(text)
        except proto.ProtocolError as exc:
            self._refuse(exc)
            if exc.clip is not None:  # a refused clip: its client is not left waiting
                self.services.metrics.clip_requested()
                await self.send(ev.ClipReady(audio_id=exc.clip or None))
            return
        if isinstance(message, proto.AudioFrame):  # OpenAI Realtime's base64 audio
            await self._feed(message, self.last_heard)
        elif isinstance(message, proto.Ping):
            await self.send(ev.Pong())
        elif isinstance(message, proto.Status):
            await self.send(self.status())
        elif isinstance(message, proto.Config):
            self._sync_options()
            await self.send(ev.Configured(config=self.codec.config))
        elif isinstance(message, proto.Flush):
            if not self.policy.finished:
                self.policy.flush()
                self.decodes.pump()
        elif isinstance(message, proto.End):
            await self._end()
        elif isinstance(message, proto.ClipAudio):
            self.services.metrics.clip_requested()
            await self._clip_queue().submit(message, self.codec.config)

    async def _end(self) -> None:
        async with self._feeding:
            if self.policy.finished:
                return
            if self._pipeline is not None:
                samples, probs = await asyncio.to_thread(self._pipeline.drain)
                if len(samples):
                    self.policy.feed(samples, probs)
            self.policy.finish()
        self.decodes.pump()

    def _sync_options(self) -> None:
        config = self.codec.config
        realtime = self.codec.realtime  # OpenAI Realtime's VAD settings, before any audio
        if realtime is not None and self._pipeline is None and not self.policy.busy:
            tuned = realtime.settings.vad_tuning()
            self.policy = Policy(replace(self.services.policy_config, **tuned))
        self.policy.set_options(None if config.language == "auto" else config.language, config.task)

    def status(self) -> ev.StatusReport:
        clips = self._clips.status() if self._clips is not None else None
        load = self.services.load
        return ev.StatusReport(
            state="processing" if self.policy.busy or clips else "ready",
            session_id=self.id,
            duration=self.policy.duration,
            queued_jobs=self.services.scheduler.pending,
            step=self.policy.step_s,
            audio_id=clips.audio_id if clips else ev.UNSET,
            progress=clips.progress if clips else ev.UNSET,
            clips_queued=clips.clips_queued if clips else ev.UNSET,
            load=load.status() if load else ev.UNSET,
        )

    # ---- decoding

    def _queue_events(self) -> None:
        """Move the policy's events to the outbox at once: nothing can come between them."""
        for event in map(wire_event, self.policy.events()):
            if isinstance(event, ev.Partial) and not self.codec.config.partials:
                continue
            if isinstance(event, ev.Final):
                self.metrics.final_made(event.segment_id, event.end, self.policy.needed_from_s)
                if self._journal is not None:
                    self._journal.final(event)
            if isinstance(event, ev.Ended) and self._clips is not None:
                # Clips sent before `end` are answered first; nothing follows `end`.
                self._spawn(self._end_after_clips(event))
                continue
            self.out.put(event)
        self._tell_journal()

    def _tell_journal(self) -> None:
        """Tell the board (Ray Serve) what another replica would need to go on, when due."""
        link = self.services.journal
        if self._journal is None or link is None:
            return
        config = self.codec.config
        update = self._journal.update(config, self.policy.needed_from_s, time.monotonic())
        if update is not None:
            link.record(update)

    async def _journaled(self) -> None:
        """Returns once the board has every update told so far (a final leaves after it)."""
        if self._journal is not None and self.services.journal is not None:
            await self.services.journal.flushed()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` beside the session, holding its task until it is done."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _end_after_clips(self, event: ev.Ended) -> None:
        assert self._clips is not None
        await self._clips.drain()
        self.out.put(event)

    # ---- outbound

    async def send(self, event: ev.ServerEvent) -> None:
        """Queue an event behind everything the session said before (callback form)."""
        self.out.put(event)

    async def room_for_audio(self) -> None:
        """Return when the session may read its next frame: at once, unless more than
        `max_backlog_s` of its audio waits to be decoded. Then the server stops reading until
        half of that waits, so a client that sends faster than the server transcribes is
        slowed by TCP itself; it is told once, and nothing it sent is dropped."""
        limit = self.services.max_backlog_s
        if limit <= 0 or self.policy.backlog_s <= limit:
            return
        # Paused, reading resumes at half the limit: then many frames are read at once, and
        # a ping the client sent behind its audio is answered within seconds.
        while (
            not self.out.closed and self.out.attached.is_set() and self.policy.backlog_s > limit / 2
        ):
            if not self._told_backlog:
                self._told_backlog = True
                await self.send_error(
                    proto.OVERLOADED,
                    f"audio arrives faster than it is transcribed: reading pauses while more "
                    f"than {limit:g} s of it waits (the server's --max-backlog); nothing is "
                    "dropped",
                )
            self.decodes.decoded.clear()
            self.decodes.pump()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.decodes.decoded.wait(), 1.0)

    @property
    def in_hand(self) -> bool:
        """Is the server still working for this session (a decode, clips, unsent messages)?
        Such a session is not idle, however long its client stays quiet."""
        decoding = bool(self.decodes.running)
        clips = self._clips is not None and self._clips.busy
        return decoding or clips or self.out.pending

    async def send_error(self, code: str, message: str) -> None:
        self.out.put(ev.Error(code=code, message=message))

    def _refuse(self, exc: proto.ProtocolError) -> None:
        """A client frame the codec refused: its error, with the parameter and the client's
        event id where the dialect names them (OpenAI Realtime)."""
        about = {k: v for k, v in (("param", exc.param), ("event_id", exc.event_id)) if v}
        self.out.put(ev.Error(code=exc.code, message=exc.message, **about))

    # ---- whole clips

    def _clip_queue(self) -> ClipQueue:
        if self._clips is None:
            services = self.services
            self._clips = ClipQueue(
                self.id,
                services.engine,
                services.scheduler,
                self.send,
                lambda: self.out.closed,
                services.load,
                services.memory,
                services.max_clip_s,
            )
        return self._clips
