"""The journal of a session, for another replica to go on with it (`journal.py`): when a
session tells the board, and what the board keeps, gives over and forgets. No Ray."""

from __future__ import annotations

from whisperwire.journal import MAX_FINALS, MOVED_S, JournalBook, SessionJournal, Update
from whisperwire.protocol import StreamConfig
from whisperwire.protocol import events as ev

CONFIG = {"sample_rate": 16000, "encoding": "s16le", "language": "en"}
SETTINGS = StreamConfig(**CONFIG)


def final(n: int, start: float = 0.0) -> ev.Final:
    word = ev.Word(word=f" w{n}", start=start, end=start + 0.3, probability=0.9)
    return ev.Final(
        segment_id=n, text=f"w{n}", start=start, end=start + 0.3, language="en", words=(word,)
    )


def update(
    sid: str = "s",
    holder: str = "a",
    seq: int = 1,
    offset: float = 0.0,
    finals: tuple[ev.Final, ...] = (),
) -> Update:
    nxt = finals[-1].segment_id + 1 if finals else 0
    return Update(sid, holder, seq, {"language": "en"}, CONFIG, offset, nxt, finals)


def test_a_session_tells_the_board_of_each_final_a_change_and_a_moved_offset() -> None:
    journal = SessionJournal("s", "a", {"language": "en"})
    first = journal.update(SETTINGS, 0.0, now=0.0)
    assert first is not None and first.seq == 1 and first.finals == ()
    assert journal.update(SETTINGS, 0.5, now=0.5) is None, "nothing new, the offset barely moved"
    journal.final(final(0))
    made = journal.update(SETTINGS, 0.5, now=0.6)
    assert made is not None and made.finals == (final(0),) and made.next_segment == 1
    assert journal.update(SETTINGS, 0.5 + MOVED_S, now=0.7) is None, "not twice a second"
    moved = journal.update(SETTINGS, 0.5 + MOVED_S, now=0.6 + MOVED_S)
    assert moved is not None and moved.finals == () and moved.seq == 3
    changed = journal.update(StreamConfig(**{**CONFIG, "language": "de"}), 1.5, now=2.0)
    assert changed is not None and changed.config["language"] == "de"


def test_the_board_gives_a_session_over_with_its_finals_in_order_and_the_newest_offset() -> None:
    book = JournalBook(keep_s=10.0)
    book.record(update(seq=2, offset=3.0, finals=(final(1, 2.0),)), now=0.0)
    book.record(update(seq=1, offset=1.0, finals=(final(0),)), now=0.0)  # came late
    assert book.holder("s") == "a"
    journal = book.take("s", "a", "b", now=1.0)
    assert journal is not None
    assert [f.segment_id for f in journal.finals] == [0, 1]
    assert journal.offset_s == 3.0 and journal.next_segment == 2
    assert book.holder("s") == "b"
    assert book.take("s", "a", "c", now=1.0) is None, "taken already"
    book.record(update(holder="a", seq=3, offset=9.0), now=1.0)  # the old holder's last word
    again = book.take("s", "b", "c", now=1.0)
    assert again is not None and again.offset_s == 3.0, "the old holder is no longer heard"


def test_the_board_keeps_the_last_finals_and_forgets_ended_sessions() -> None:
    book = JournalBook(keep_s=10.0)
    finals = tuple(final(n, n) for n in range(MAX_FINALS + 20))
    book.record(update(finals=finals), now=0.0)
    journal = book.take("s", "a", "a", now=0.0)
    assert journal is not None and len(journal.finals) == MAX_FINALS
    assert journal.finals[0].segment_id == 20
    book.forget("s", "a")
    assert book.holder("s") is None
    book.record(update(seq=9), now=0.0)  # sent before the end, arrived after it
    assert book.holder("s") is None and len(book) == 0


def test_a_silent_replicas_journals_go_after_keep_s_a_beating_ones_stay() -> None:
    book = JournalBook(keep_s=10.0)
    book.record(update("x", "dead"), now=0.0)
    book.record(update("y", "alive"), now=0.0)
    book.beat("alive", now=9.0)
    book.expire(now=9.5)
    assert book.holder("x") == "dead" and book.holder("y") == "alive"
    book.beat("alive", now=15.0)
    book.expire(now=15.0)
    assert book.holder("x") is None and not book.beating("dead")
    assert book.holder("y") == "alive"
