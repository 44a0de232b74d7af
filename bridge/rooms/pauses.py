"""Paused schools (pure): while a school's messaging is paused, its rooms' wanted power levels
carry the pause, so a sync keeps them paused instead of "repairing" them."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from bridge.rooms.desired import DesiredRoom, DesiredState

PAUSES_KEY = "school_pauses"  # the store's value: {UAI: {"level", "reason", "at", "rooms": {room id: levels}}}


def decode(text: str | None) -> dict[str, dict[str, Any]]:
    return dict(json.loads(text)) if text else {}


def encode(pauses: Mapping[str, Mapping[str, Any]]) -> str:
    return json.dumps(pauses, sort_keys=True, separators=(",", ":"))


def paused_levels(pauses: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
    """Room id -> the events_default its pause set."""
    return {room_id: int(p["level"]) for p in pauses.values() for room_id in p.get("rooms", {})}


def with_pauses(desired: DesiredState, levels_by_key: Mapping[str, int]) -> DesiredState:
    """The desired state with each paused room's events_default raised to its pause's level."""
    if not levels_by_key:
        return desired
    rooms: dict[str, DesiredRoom] = dict(desired.rooms)
    for key, level in levels_by_key.items():
        room = rooms.get(key)
        if room is not None:
            power = {**room.power_levels, "events_default": max(level, int(room.power_levels["events_default"]))}
            rooms[key] = dataclasses.replace(room, power_levels=power)
    return dataclasses.replace(desired, rooms=rooms)
