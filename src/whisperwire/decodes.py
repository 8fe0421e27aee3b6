"""A session's decodes: as many at once as the machine's load allows, each through the
scheduler, its answer applied to the policy; a failed one retried with back-off and told to
the client once, its audio kept for the next decode."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from whisperwire import protocol as proto
from whisperwire.outbox import Outbox
from whisperwire.policy import DecodeRequest, Hypothesis, Policy
from whisperwire.protocol import events as ev
from whisperwire.scheduler import Overloaded
from whisperwire.services import Services, batchable, timed_batch, timed_decode

log = logging.getLogger("whisperwire.session")

DECODE_ATTEMPTS = 3  # tries of a region's final window before its audio is reported lost
RETRY_DELAY_S = 0.5  # before the second try; doubles after each failure


class Decodes:
    def __init__(
        self,
        session_id: str,
        services: Services,
        policy: Callable[[], Policy],
        out: Outbox,
        queue_events: Callable[[], None],
    ) -> None:
        """`policy`: the session's policy (it may be replaced before audio); `queue_events`
        moves the policy's events to the client, before and after each decode."""
        self.id = session_id
        self.services = services
        self._policy = policy
        self.out = out
        self._queue_events = queue_events
        self.running: set[asyncio.Task[None]] = set()  # decodes running (or backing off)
        self.decoded = asyncio.Event()  # set after each decode (for a paused reader)
        self._failures = 0  # decodes failed in a row
        self._final_failures = 0  # of them, tries of a region's last window

    def pump(self) -> None:
        """Queue what the policy has to say and start its next decode if it wants one."""
        self._queue_events()
        policy, load = self._policy(), self.services.load
        if load is not None:  # the cadence and the decodes at once the machine's load allows
            streams = load.live_streams  # one count of the live streams for both
            policy.step_s = load.step(streams)
            # after a failure, one decode at a time, each after its back-off
            policy.max_in_flight = 1 if self._failures else load.parallel(streams)
        while len(self.running) < policy.max_in_flight:
            request = policy.next_request()
            if request is None:
                self._queue_events()
                break
            task = asyncio.create_task(self._decode(request))
            self.running.add(task)
            task.add_done_callback(self.running.discard)

    def cancel(self) -> None:
        for task in list(self.running):
            task.cancel()

    async def _decode(self, request: DecodeRequest) -> None:
        engine = self.services.engine
        try:
            hypothesis, seconds, solo = await self.services.scheduler.run(
                self.id,
                timed_decode(engine, request),
                batchable(engine, request, timed_batch(engine)),
                kind=request.kind,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the client must hear about it
            await self._failed(request, exc)
        else:
            if (load := self.services.load) is not None:
                load.stream_decoded(self.id)
                if not solo:  # what the workers take
                    load.record(request.kind, seconds)
            self._failures = self._final_failures = 0
            try:
                self._policy().apply(request, hypothesis)
            except Exception:  # a bug of ours: said, with its words' time span, not hidden
                ref = proto.incident()
                log.exception("session %s: applying a decode failed [incident %s]", self.id, ref)
                message = (
                    f"the server failed on the transcript of {request.offset:.2f}-"
                    f"{request.end:.2f} s (incident {ref} in its log)"
                )
                self.out.put(ev.Error(code=proto.INTERNAL_ERROR, message=message))
        self.running.discard(asyncio.current_task())  # type: ignore[arg-type]
        self.decoded.set()
        self.pump()

    async def _failed(self, request: DecodeRequest, exc: Exception) -> None:
        """Keep the audio and try again later; only a region's last window, failing
        `DECODE_ATTEMPTS` times in a row, is given up, with an error naming its time span."""
        self._failures += 1
        if isinstance(exc, Overloaded):
            code, what = proto.OVERLOADED, f"decode postponed: {exc}"
        else:
            ref = proto.incident()
            log.error("session %s: decode failed [incident %s]", self.id, ref, exc_info=exc)
            code, what = proto.TRANSCRIPTION_ERROR, f"decoding failed (incident {ref})"
        if request.kind in ("final", "cap"):  # the decodes whose audio is not decoded again
            self._final_failures += 1
        if self._final_failures >= DECODE_ATTEMPTS:
            span = f"from {request.offset:.2f} s to {request.end:.2f} s"
            lost = f"the audio {span} could not be transcribed"
            self.out.put(
                ev.Error(code=code, message=f"{what}; {lost} after {DECODE_ATTEMPTS} attempts")
            )
            self._failures = self._final_failures = 0
            self._policy().apply(request, Hypothesis([], None))
            return
        if self._failures == 1:  # once per run of failures
            self.out.put(
                ev.Error(code=code, message=f"{what}; the audio is kept and decoded again")
            )
        self._policy().release(request)
        await asyncio.sleep(RETRY_DELAY_S * 2 ** min(self._failures - 1, 4))
