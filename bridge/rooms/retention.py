"""Which messages a room's retention policy removes (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# Events that are the room's structure or already empty: never swept.
_KEEP_TYPES = frozenset({"m.room.redaction"})


def is_expired(event: dict[str, Any], *, cutoff_ms: int) -> bool:
    if "state_key" in event or event.get("type") in _KEEP_TYPES:
        return False
    if int(event.get("origin_server_ts", cutoff_ms)) >= cutoff_ms:
        return False
    redacted = (event.get("unsigned") or {}).get("redacted_because") is not None
    return not redacted and bool(event.get("content"))


def expired(events: Iterable[dict[str, Any]], *, cutoff_ms: int) -> list[str]:
    """Event ids older than the cutoff that still carry content."""
    return [str(e["event_id"]) for e in events if is_expired(e, cutoff_ms=cutoff_ms)]
