"""The fake homeserver's rooms: state, timeline and the authorisation rules the bridge relies on.

Room version 12 semantics (creators hold unlimited power and are not listed in `users`), the
power checks of invite, kick, redact, state and messages, invite-only joins. Refusals raise
`Refused(status, errcode, message)` with Synapse's status and errcode.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from typing import Any

MEMBER = "m.room.member"


class Refused(Exception):
    def __init__(self, status: int, errcode: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.errcode = errcode


def forbidden(message: str) -> Refused:
    return Refused(403, "M_FORBIDDEN", message)


@dataclass
class Room:
    room_id: str
    creator: str
    version: str = "12"
    state: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    by_id: dict[str, dict[str, Any]] = field(default_factory=dict)  # the timeline's events by id

    def content(self, etype: str, key: str = "") -> dict[str, Any] | None:
        ev = self.state.get((etype, key))
        return None if ev is None else ev["content"]

    def membership(self, user: str) -> str | None:
        c = self.content(MEMBER, user)
        return None if c is None else str(c.get("membership"))

    def members(self, *memberships: str) -> set[str]:
        return {k for (t, k), ev in self.state.items()
                if t == MEMBER and ev["content"].get("membership") in memberships}

    def power(self, user: str) -> float:
        if self.version.isdigit() and int(self.version) >= 12 and user == self.creator:
            return float("inf")
        pl = self.content("m.room.power_levels", "")
        if pl is None:  # before any power levels: the creator alone has power
            return 100 if user == self.creator else 0
        return float((pl.get("users") or {}).get(user, pl.get("users_default", 0)))

    def required(self, action: str, default: int = 50) -> float:
        pl = self.content("m.room.power_levels", "") or {}
        return float(pl.get(action, default))

    def required_for_event(self, etype: str, *, is_state: bool) -> float:
        pl = self.content("m.room.power_levels", "")
        if pl is None:
            return 0
        events = pl.get("events") or {}
        if etype in events:
            return float(events[etype])
        return float(pl.get("state_default", 50) if is_state else pl.get("events_default", 0))


class RoomStore:
    """All rooms of the fake, with one stream ordering for every event (the /sync token)."""

    def __init__(self, server_name: str) -> None:
        self.server_name = server_name
        self.rooms: dict[str, Room] = {}
        self.aliases: dict[str, str] = {}
        self.pos = 0
        self._ids = itertools.count(1)

    def new_id(self, sigil: str) -> str:
        return f"{sigil}fake{next(self._ids)}:{self.server_name}"

    def append(self, room: Room, sender: str, etype: str, content: dict[str, Any], *, state_key: str | None = None,
               extra: dict[str, Any] | None = None) -> dict[str, Any]:
        self.pos += 1
        ev: dict[str, Any] = {"type": etype, "sender": sender, "content": copy.deepcopy(content),
                              "event_id": self.new_id("$"), "room_id": room.room_id,
                              "origin_server_ts": self.pos, "stream": self.pos, **(extra or {})}
        if state_key is not None:
            ev["state_key"] = state_key
            if (previous := room.state.get((etype, state_key))) is not None:  # as Synapse marks it
                ev["unsigned"] = {"replaces_state": previous["event_id"]}
            room.state[(etype, state_key)] = ev
        room.timeline.append(ev)
        room.by_id[ev["event_id"]] = ev
        return ev

    def room(self, room_id: str) -> Room:
        room = self.rooms.get(room_id)
        if room is None:
            raise forbidden(f"Unknown room {room_id}")
        return room

    def joined(self, room: Room, user: str) -> None:
        if room.membership(user) != "join":
            raise forbidden(f"User {user} not in room {room.room_id}")

    # --- the operations, each with Synapse's refusals ---------------------------------------

    def send_state(self, room: Room, sender: str, etype: str, key: str, content: dict[str, Any]) -> dict[str, Any]:
        self.joined(room, sender)
        if etype == MEMBER:
            # One's own membership, staying in: a new display name or avatar, which needs no power.
            if key != sender or content.get("membership") != "join":
                raise forbidden("You may only change your own profile in this room")
            return self.append(room, sender, etype, content, state_key=key)
        if room.power(sender) < room.required_for_event(etype, is_state=True):
            raise forbidden(f"You don't have permission to post that to the room. user_level "
                            f"({room.power(sender)}) < send_level ({room.required_for_event(etype, is_state=True)})")
        if etype == "m.room.power_levels":
            self._check_power_change(room, sender, content)
        return self.append(room, sender, etype, content, state_key=key)

    def _check_power_change(self, room: Room, sender: str, new: dict[str, Any]) -> None:
        """Nobody may raise anyone above their own level, nor lower a peer (spec auth rules)."""
        mine = room.power(sender)
        old_users = (room.content("m.room.power_levels") or {}).get("users") or {}
        for user in set(old_users) | set(new.get("users") or {}):
            before, after = old_users.get(user), (new.get("users") or {}).get(user)
            if before == after:
                continue
            if (after is not None and after > mine) or (user != sender and before is not None and before >= mine):
                raise forbidden(f"You don't have permission to change the level of {user}")
        if room.version.isdigit() and int(room.version) >= 12 and room.creator in (new.get("users") or {}):
            raise Refused(400, "M_BAD_JSON", "Creators must not be listed in the users of power levels")

    def send_message(self, room: Room, sender: str, etype: str, content: dict[str, Any]) -> dict[str, Any]:
        self.joined(room, sender)
        if room.power(sender) < room.required_for_event(etype, is_state=False):
            raise forbidden("You don't have permission to post that to the room.")
        return self.append(room, sender, etype, content)

    def invite(self, room: Room, sender: str, target: str, reason: str | None) -> None:
        self.joined(room, sender)
        current = room.membership(target)
        if current in ("join", "ban"):
            raise forbidden(f"{target} is {'already in the room' if current == 'join' else 'banned from the room'}.")
        if room.power(sender) < room.required("invite", 0):
            raise forbidden("You don't have permission to invite users")
        self.append(room, sender, MEMBER, {"membership": "invite", **({"reason": reason} if reason else {})},
                    state_key=target)

    def kick(self, room: Room, sender: str, target: str, reason: str) -> None:
        self.joined(room, sender)
        if room.membership(target) not in ("join", "invite"):
            raise forbidden("The target user is not in the room")
        if room.power(sender) < room.required("kick") or room.power(target) >= room.power(sender):
            raise forbidden("You don't have permission to kick this user")
        self.append(room, sender, MEMBER, {"membership": "leave", "reason": reason}, state_key=target)

    def join(self, room: Room, user: str) -> None:
        rule = (room.content("m.room.join_rules") or {}).get("join_rule", "invite")
        current = room.membership(user)
        if current == "join":
            return
        if current != "invite" and rule != "public":
            raise forbidden("You are not invited to this room.")
        self.append(room, user, MEMBER, {"membership": "join"}, state_key=user)

    def leave(self, room: Room, user: str) -> None:
        if room.membership(user) not in ("join", "invite"):
            raise forbidden(f"User {user} not in room {room.room_id}")
        self.append(room, user, MEMBER, {"membership": "leave"}, state_key=user)

    def redact(self, room: Room, sender: str, event_id: str, reason: str) -> dict[str, Any]:
        self.joined(room, sender)
        target = room.by_id.get(event_id)
        # Like Synapse, an event the room doesn't show (purged, or not arrived) may still be
        # redacted, by someone allowed to redact others'.
        if (target is None or target["sender"] != sender) and room.power(sender) < room.required("redact"):
            raise forbidden("You don't have permission to redact events")
        if target is not None:
            # The spec's redaction algorithm: what the room's authorisation needs stays (for a
            # state event, the current state is its redacted copy: a member stays a member).
            keep = _KEPT_ON_REDACTION.get(target["type"], ()) if "state_key" in target else ()
            target["content"] = {k: v for k, v in target["content"].items() if k in keep}
            target.setdefault("unsigned", {})["redacted_because"] = {"sender": sender}
        return self.append(room, sender, "m.room.redaction", {"reason": reason}, extra={"redacts": event_id})

    def visible_state(self, room: Room, user: str) -> list[dict[str, Any]]:
        self.joined(room, user)
        return [_client(ev) for ev in room.state.values()]


# The content keys a redaction keeps, by event type (room versions 11 and 12).
_KEPT_ON_REDACTION: dict[str, tuple[str, ...]] = {
    MEMBER: ("membership", "join_authorised_via_users_server"),
    "m.room.join_rules": ("join_rule", "allow"),
    "m.room.history_visibility": ("history_visibility",),
    "m.room.power_levels": ("ban", "events", "events_default", "invite", "kick", "redact", "state_default", "users",
                            "users_default"),
}


def _client(ev: dict[str, Any]) -> dict[str, Any]:
    """An event as the client-server API returns it (without the fake's stream position)."""
    return {k: copy.deepcopy(v) for k, v in ev.items() if k != "stream"}


client_event = _client
