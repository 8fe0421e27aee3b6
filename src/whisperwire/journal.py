"""A live session's journal: what another server needs to go on with it if this one dies.

Under Ray Serve a session lives in the replica that accepted it (`ray_sessions` holds the
board). As a session goes, its replica tells the board what a resume elsewhere needs: the
session's query and settings, its finals (the last `MAX_FINALS`), and `offset_s`, the point
of its audio from which no final has a word. When the replica dies, the client reconnects
with `?resume=` and lands on another replica, which takes the journal over: it sends again
the finals the client missed, asks for the audio from `offset_s` on (its greeting's
`audio_offset`), and decodes it after the last final words. No final is lost or said twice;
the words not yet final are decoded again from the audio the client sends again.

Pure: the session's side (`SessionJournal`, which says when an update is due) and the
board's (`JournalBook`, every session's journal, bounded); no Ray, no clock of its own.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from whisperwire import protocol as proto
from whisperwire.protocol import events as ev

__all__ = [
    "MAX_FINALS",
    "Journal",
    "JournalBook",
    "JournalLink",
    "SessionJournal",
    "Update",
]

MAX_FINALS = 50  # finals kept per session, for a client that resumes on another replica
MOVED_S = 1.0  # the offset moved this far: an update, at most once per this many seconds
MAX_SESSIONS = 2_000  # journals a board keeps; past it the least recently updated go
FORGOTTEN = 10_000  # ended sessions remembered, so that an update arriving late is ignored


@dataclass(frozen=True)
class Update:
    """What a session's replica tells the board since its last update."""

    session_id: str
    holder: str  # the replica holding the session
    seq: int  # 1, 2, ... per holder: the newest settings and offset win
    query: dict[str, str]
    config: dict[str, Any]  # the session's stream config, dumped
    offset_s: float  # audio from here on is what a resume elsewhere needs again
    next_segment: int  # the number of the session's next final
    finals: tuple[ev.Final, ...]  # the finals made since the holder's last update


@dataclass(frozen=True)
class Journal:
    """A session to go on with: a board's answer to a replica that takes it over."""

    session_id: str
    query: dict[str, str]
    config: dict[str, Any]
    offset_s: float
    next_segment: int
    finals: tuple[ev.Final, ...]  # in order: the last MAX_FINALS


class JournalLink(Protocol):
    """A replica's way to the board (`ray_sessions.BoardLink`)."""

    holder: str  # this replica's name

    def record(self, update: Update) -> None:
        """Send `update` (in order, without waiting)."""

    def forget(self, session_id: str) -> None:
        """The session ended here: nobody will resume it elsewhere."""

    async def flushed(self) -> None:
        """Returns once the board has what was recorded before the call (or gave up)."""

    async def claim(self, session_id: str) -> Journal | None:
        """The journal of a session whose replica is gone, now this replica's; None when
        there is none or its replica lives."""


class SessionJournal:
    """A session's side: collects its finals and says when an update is due (a final was
    made, the settings changed, or the offset moved `MOVED_S` at most every `MOVED_S`)."""

    def __init__(self, session_id: str, holder: str, query: dict[str, str]) -> None:
        self.session_id = session_id
        self.holder = holder
        self.query = dict(query)
        self.next_segment = 0
        self._new: list[ev.Final] = []
        self._seq = 0
        self._config: proto.StreamConfig | None = None
        self._offset = -math.inf
        self._at = -math.inf

    def final(self, event: ev.Final) -> None:
        self._new.append(event)
        self.next_segment = event.segment_id + 1

    def update(self, config: proto.StreamConfig, offset_s: float, now: float) -> Update | None:
        """The update due now, or None (asked after every frame: cheap when none is due)."""
        moved = offset_s - self._offset >= MOVED_S and now - self._at >= MOVED_S
        if not (self._new or moved or config != self._config):
            return None
        self._seq += 1
        finals, self._new = tuple(self._new), []
        self._config, self._offset, self._at = config, offset_s, now
        return Update(
            *(self.session_id, self.holder, self._seq, self.query, config.model_dump()),
            *(offset_s, self.next_segment, finals),
        )


@dataclass
class _Entry:
    holder: str
    seq: int
    journal: Journal  # its finals empty: they are `finals`, merged by segment id
    finals: dict[int, ev.Final] = field(default_factory=dict)


class JournalBook:
    """The board's side: the journal of every session of every replica. A replica beats
    (its updates count as beats); the journals of a replica silent for `keep_s` go (it died
    longer ago than a client may take to resume)."""

    def __init__(self, keep_s: float) -> None:
        self.keep_s = keep_s
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._beats: dict[str, float] = {}  # replica -> when it was last heard
        self._forgotten: OrderedDict[str, None] = OrderedDict()  # ended, oldest first

    def __len__(self) -> int:
        return len(self._entries)

    def beat(self, holder: str, now: float) -> None:
        self._beats[holder] = now

    def beating(self, holder: str) -> bool:
        """Has `holder` been heard within `keep_s` (as of the last `expire`)?"""
        return holder in self._beats

    def record(self, update: Update, now: float) -> None:
        self.beat(update.holder, now)
        sid = update.session_id
        if sid in self._forgotten:
            return  # ended; this update came late
        entry = self._entries.get(sid)
        if entry is not None and entry.holder != update.holder:
            return  # taken over by another replica: the old holder is gone
        if entry is None or update.seq > entry.seq:  # the newest settings and offset
            journal = Journal(
                sid, update.query, update.config, update.offset_s, update.next_segment, ()
            )
            if entry is None:
                entry = self._entries[sid] = _Entry(update.holder, update.seq, journal)
            else:
                entry.seq, entry.journal = update.seq, journal
        self._entries.move_to_end(sid)
        if update.finals:
            entry.finals.update((f.segment_id, f) for f in update.finals)
            for old in sorted(entry.finals)[:-MAX_FINALS]:
                del entry.finals[old]
        while len(self._entries) > MAX_SESSIONS:
            self._entries.popitem(last=False)

    def forget(self, session_id: str, holder: str) -> None:
        entry = self._entries.get(session_id)
        if entry is not None and entry.holder != holder:
            return  # another replica holds it now
        self._entries.pop(session_id, None)
        self._forgotten[session_id] = None
        if len(self._forgotten) > FORGOTTEN:
            self._forgotten.popitem(last=False)

    def holder(self, session_id: str) -> str | None:
        entry = self._entries.get(session_id)
        return entry.holder if entry is not None else None

    def take(self, session_id: str, holder: str, claimant: str, now: float) -> Journal | None:
        """The journal, now `claimant`'s, if `holder` still holds it (else None: another
        claim took it first). The claimant's updates go on from it."""
        entry = self._entries.get(session_id)
        if entry is None or entry.holder != holder:
            return None
        entry.holder, entry.seq = claimant, 0
        self.beat(claimant, now)
        finals = tuple(entry.finals[k] for k in sorted(entry.finals))
        return replace(entry.journal, finals=finals)

    def expire(self, now: float) -> None:
        """Drop the journals of replicas silent for `keep_s`."""
        gone = {h for h, at in self._beats.items() if now - at > self.keep_s}
        for holder in gone:
            del self._beats[holder]
        for sid in [sid for sid, e in self._entries.items() if e.holder in gone]:
            del self._entries[sid]
