"""Outbox slots for replicas sharing a data dir: each claims the lowest free one, and a slot
whose holder died is claimed again, outbox and all. Real file locks, in real processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from whisperwire.forward.slots import SLOTS_DIRNAME, claim_slot

HOLD = """
import sys, time
from pathlib import Path
from whisperwire.forward.slots import claim_slot
slot, _ = claim_slot(Path(sys.argv[1]))
print(slot.name, flush=True)
time.sleep(600)
"""


def holder(data_dir: Path) -> tuple[subprocess.Popen[str], str]:
    """Another process (a replica) that claims a slot and keeps it."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(data_dir)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def test_replicas_claim_the_lowest_free_slots_and_a_dead_ones_slot_is_claimed_again(
    tmp_path: Path,
) -> None:
    first, first_slot = holder(tmp_path)
    second, second_slot = holder(tmp_path)
    try:
        assert (first_slot, second_slot) == ("0", "1")
        (tmp_path / SLOTS_DIRNAME / "0" / "forward-outbox.sqlite3").write_text("left")
        first.kill()  # the replica dies: its lock goes with it
        first.wait()
        slot, claim = claim_slot(tmp_path)
        assert slot == tmp_path / SLOTS_DIRNAME / "0"
        assert (slot / "forward-outbox.sqlite3").read_text() == "left"
        assert claim_slot(tmp_path)[0].name == "2"  # held ones are passed over
        claim.release()
        assert claim_slot(tmp_path)[0].name == "0"
    finally:
        second.kill()
        second.wait()
