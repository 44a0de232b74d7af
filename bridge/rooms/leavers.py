"""Leavers (pure): who left the directory, and whose data is due for erasure.

The arrêté of 30 November 2006 (as amended in 2017) wants ENT account data deleted within three
months of the person no longer needing it: the default grace period is 90 days.
"""

from __future__ import annotations

from collections.abc import Mapping


def leaver_changes(known: Mapping[str, str], present: set[str], leavers: Mapping[str, int], *,
                   now_ms: int) -> tuple[dict[str, int], list[str]]:
    """(newly gone -> now, came back) among the people the bridge gave an account to."""
    gone = {pid: now_ms for pid in known if pid not in present and pid not in leavers}
    back = sorted(pid for pid in leavers if pid in present)
    return gone, back


def due_for_erasure(leavers: Mapping[str, int], *, now_ms: int, grace_ms: int) -> list[str]:
    return sorted(pid for pid, left in leavers.items() if now_ms >= left + grace_ms)
