"""Outsiders (pure): a join or invite into a managed room of someone the directory doesn't entitle."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any


def outsider(event: dict[str, Any], entitled: Mapping[str, frozenset[str]], *,
             bridge_users: Collection[str]) -> str | None:
    """The user to remove at once, or None. Rooms not in `entitled` are not managed (or not yet
    synced): the periodic sync stays the safety net there."""
    if event.get("type") != "m.room.member":
        return None
    members = entitled.get(str(event.get("room_id")))
    user = event.get("state_key")
    membership = (event.get("content") or {}).get("membership")
    if members is None or not user or user in bridge_users or membership not in ("invite", "join", "knock"):
        return None
    return None if user in members else str(user)
