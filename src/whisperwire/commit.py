"""The commit rule: how many of a decode's new words will not change (the policy holds them,
then says them as final). Pure: words and settings in, a count out."""

from __future__ import annotations

from whisperwire.policy_config import PolicyConfig
from whisperwire.words import (
    Word,
    checked_prefix,
    common_prefix,
    confident_prefix,
    ending_by,
    heard_prefix,
)


def commit_count(
    cfg: PolicyConfig,
    thorough: bool,
    new: list[Word],
    tail: list[Word],
    window_end: float,
    failed: frozenset[int],
) -> int:
    """How many leading words of `new` (the decode's words beyond those committed; `tail`:
    the previous decode's) are committed, for a window ending at `window_end`.

    A thorough decode (a `commit` request) commits every word heard that ends a guard before
    the end; otherwise one-pass commits the words sure enough (`confident_prefix`), from
    segments that passed Whisper's checks, and agreement the words two decodes share."""
    if thorough:
        return min(ending_by(new, window_end - cfg.guard_s), heard_prefix(new))
    if cfg.commit == "agreement":
        return common_prefix(tail, new)
    agreed = confident_prefix(
        new,
        window_end,
        cfg.guard_s,
        cfg.min_probability,
        cfg.max_age_s,
        cfg.sure_guard_s,
        cfg.sure_probability,
    )
    if not cfg.commit_failed_segments:
        agreed = min(agreed, checked_prefix(new, failed))
    return agreed
