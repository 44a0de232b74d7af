"""The plan's vocabulary: frozen actions that carry their reason, in a deterministic order."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from bridge.rooms.desired import DesiredRoom

# Apply order: Spaces exist before rooms are added to them; power levels before invites so an
# invited teacher is a moderator from the first moment; kicks after invites.
PHASES = {"provision_account": -1, "create_space": 0, "create_room": 1, "transfer_room": 2, "set_state": 3,
          "set_power_levels": 4, "invite": 5, "kick": 6, "add_to_space": 7, "archive_room": 8, "unarchive_room": 9,
          "erase_person": 10}


@dataclass(frozen=True, slots=True)
class Action:
    type: str
    room_key: str
    reason: str
    user_id: str | None = None
    detail: Mapping[str, Any] | None = None  # None, not {}: millions of invites need no dict each

    def sort_key(self) -> tuple[int, str, str]:
        return (PHASES[self.type], self.room_key, self.user_id or "")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "room_key": self.room_key, "reason": self.reason}
        if self.user_id is not None:
            out["user_id"] = self.user_id
        if self.detail:
            out["detail"] = dict(self.detail)
        return out


def create(room: DesiredRoom) -> Action:
    return Action("create_space" if room.is_space else "create_room", room.key,
                  f"no room yet for {room.template} {room.key}")


def invite(key: str, user: str, reason: str) -> Action:
    return Action("invite", key, reason, user)


def kick(key: str, user: str, reason: str) -> Action:
    return Action("kick", key, reason, user)


@dataclass(frozen=True)
class Plan:
    """A value: the actions, and the desired rooms they refer to (for the executor)."""

    actions: tuple[Action, ...]
    desired: Mapping[str, DesiredRoom]
    notes: tuple[str, ...] = ()
    actors: Mapping[str, str] = field(default_factory=dict)  # room key -> who acts there, when not the bot

    @property
    def removals(self) -> int:
        """Removals the guards weigh: those announced at archiving time (grace period over) are
        expected, and don't count."""
        return sum(1 for a in self.actions
                   if (a.type == "kick" and not (a.detail or {}).get("announced")) or a.type == "erase_person")

    def summary(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for a in self.actions:
            out[a.type] = out.get(a.type, 0) + 1
        return dict(sorted(out.items()))

    def is_empty(self) -> bool:
        return not self.actions
