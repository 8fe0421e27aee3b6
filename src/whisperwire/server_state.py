"""Server-wide state: the services every session shares, the live sessions, those parked for
a resume, and what admission asks of them (room, making room, the drain)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any

import psutil

from whisperwire.engine import Engine
from whisperwire.forward import Forwarder
from whisperwire.journal import JournalLink
from whisperwire.limits import MemoryBudget
from whisperwire.load import LoadMonitor
from whisperwire.metrics import Metrics
from whisperwire.scheduler import Scheduler
from whisperwire.services import Services
from whisperwire.session import Session
from whisperwire.settings import Settings
from whisperwire.uvicorn_adapters import Peer

__all__ = ["FINALISE_S", "App"]

log = logging.getLogger("whisperwire.server")

# A graceful stop: the sessions' time to finalise what they received (SIGTERM, or on Ray
# the application deleted).
FINALISE_S = 10.0


class App:
    """Server-wide state: the shared services and the live sessions."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        forwarder: Forwarder | None = None,
        metrics: Metrics | None = None,
        server: str = "",
        journal: JournalLink | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.forwarder = forwarder
        self.metrics = metrics or Metrics()
        self.scheduler = Scheduler(
            workers=engine.workers,
            max_batch=engine.batch,
            on_done=self.metrics.decode_done,
            solo=engine.solo_lane if engine.has_solo_lane else None,
        )
        self.metrics.watch_queue(lambda: self.scheduler.pending)
        prior = engine.decode_estimate_s
        self.load = LoadMonitor(
            workers=engine.workers,
            base_step_s=settings.policy.step_s,
            max_lag_s=settings.max_lag_s or 2.0 + 2 * prior,
            clock=time.monotonic,
            prior_decode_s=prior,
            decodes_per_commit=1 if settings.policy.commit == "one-pass" else 2,
            commit_guard_s=settings.policy.guard_s if settings.policy.commit == "one-pass" else 0,
            max_parallel=settings.stream_decodes,
            solo=engine.has_solo_lane,
        )
        process = psutil.Process()
        limit_mb = settings.max_memory_mb or 0.8 * psutil.virtual_memory().total / 2**20
        self.memory = MemoryBudget(int(limit_mb * 2**20), lambda: process.memory_info().rss)
        self.services = Services(
            engine=engine,
            scheduler=self.scheduler,
            policy_config=settings.policy,
            default_language="en" if not engine.multilingual else settings.language,
            default_task="translate" if settings.translate else "transcribe",
            max_message_bytes=settings.max_message_bytes,
            max_backlog_s=settings.max_backlog_s,
            write_timeout_s=settings.write_timeout_s,
            resume_window_s=settings.resume_window_s,
            memory=self.memory,
            max_clip_s=settings.max_clip_s,
            forwarder=forwarder,
            load=self.load,
            metrics=self.metrics,
            server=server,
            journal=journal,
        )
        self.sessions: dict[str, Session] = {}
        self.transports: dict[Peer, asyncio.Transport] = {}  # filled by websocket_protocol
        self._ending: set[asyncio.Task[None]] = set()  # sessions ended to make room
        self.stopping = False  # SIGTERM: no new sessions
        self.parked: dict[str, asyncio.TimerHandle] = {}  # dropped, kept for a resume

    def room(self) -> int:
        """New live sessions this server would admit now, one after another (none while it
        drains or is at its memory budget): what a replica reports to Ray's router."""
        if self.stopping or self.memory.over():
            return 0
        return self.load.room(self.settings.max_sessions - len(self.sessions))

    def resumable(self) -> list[str]:
        """The sessions a client may take up again with `?resume=` (connected or parked)."""
        return [sid for sid, s in self.sessions.items() if s.resumable and not s.ending]

    def make_room(self, quiet_s: float) -> bool:
        """At --max-sessions: a session parked for a resume, or else the session whose client
        has been quiet longest, at least `quiet_s`, with nothing of it in hand, is ended
        (IDLE_TIMEOUT) to free its slot. False if there is none: every session is busy."""
        now = time.monotonic()
        # A session whose connection dropped goes first: it is finalised for the forwarder.
        session = self.unpark(next(iter(self.parked))) if self.parked else None
        if session is not None:
            log.info("session %s yields its slot: its connection dropped", session.id)
            work = self.retire(session, finalise=30.0)
        else:
            quiet = [
                s
                for s in self.sessions.values()
                if not s.in_hand and not s.ending and now - s.last_heard >= quiet_s
            ]
            if not quiet:
                return False
            session = min(quiet, key=lambda s: s.last_heard)
            silent = now - session.last_heard
            log.info("session %s yields its slot: quiet for %.0f s", session.id, silent)
            work = session.idle_out(
                f"the server is full and this session sent nothing for {silent:.0f} s"
            )
        self._spawn(work)
        return True

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` (ending a session) beside the server, holding its task until done."""
        task = asyncio.get_running_loop().create_task(work)
        self._ending.add(task)
        task.add_done_callback(self._ending.discard)

    def park(self, session: Session) -> None:
        """The connection dropped before `end`: keep the session --resume-window seconds for
        its client to reconnect with `?resume=SESSION_ID`; decoding goes on meanwhile."""
        session.detach()
        self.load.stream_closed(session.id)  # not a live stream while nobody sends
        loop = asyncio.get_running_loop()

        def expire() -> None:
            if self.parked.pop(session.id, None) is not None:
                self._spawn(self.retire(session, finalise=30.0))

        self.parked[session.id] = loop.call_later(self.settings.resume_window_s, expire)
        log.info("session %s parked for %g s", session.id, self.settings.resume_window_s)

    async def take_over(self, session_id: str) -> Session | None:
        """The session a reconnecting client names, parked for it; a session the server still
        thinks connected (the drop not noticed yet) is parked first. None: nothing to resume."""
        session = self.sessions.get(session_id)
        if session_id not in self.parked and session is not None and session.resumable:
            session.drop_connection()
            for _ in range(100):  # its receive loop ends and parks it
                if session_id in self.parked:
                    break
                await asyncio.sleep(0.05)
        return self.unpark(session_id)

    def unpark(self, session_id: str) -> Session | None:
        handle = self.parked.pop(session_id, None)
        if handle is None:
            return None
        handle.cancel()
        return self.sessions.get(session_id)

    async def retire(self, session: Session, finalise: float = 0.0) -> None:
        """The session is over: its remaining finals go to the forwarder (within `finalise`
        seconds, also those of the audio not decoded yet), its slot is freed."""
        if finalise:
            await session.finalise_unattended(timeout=finalise)
        await session.closed()
        self.load.stream_closed(session.id)
        self.sessions.pop(session.id, None)
        log.info("session %s closed", session.id)

    async def drain(self, timeout: float) -> None:
        """Graceful stop: every session finalises what it has received and closes."""
        self.stopping = True
        parked = [s for s in map(self.unpark, list(self.parked)) if s is not None]
        live = [s for s in self.sessions.values() if s not in parked]
        if live or parked:
            log.info("finalising %d session(s) before shutdown", len(live) + len(parked))
            await asyncio.gather(
                *(s.shutdown(timeout) for s in live),
                *(self.retire(s, finalise=timeout) for s in parked),  # nobody to tell
                return_exceptions=True,
            )
