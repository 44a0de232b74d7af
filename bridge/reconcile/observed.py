"""What the homeserver holds for managed rooms, as plain values (built by the executor side)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ObservedRoom:
    key: str
    room_id: str
    members: Mapping[str, str]  # user id -> membership (join, invite, leave, ban)
    power_levels: Mapping[str, Any]
    name: str = ""
    topic: str = ""
    children: frozenset[str] = frozenset()  # room ids of m.space.child
    archived: bool = False
    retention_ms: int | None = None
    grace_over: bool = False  # archived, and the grace period before emptying it has passed
    left_by_choice: frozenset[str] = frozenset()  # left, or declined the invite, themselves
    # The security state, None where the event is absent (a room left half-created by a crash).
    encryption: str | None = None  # m.room.encryption's algorithm
    join_rule: str | None = None
    history_visibility: str | None = None
    guest_access: str | None = None
    has_power_levels: bool = True  # False: no m.room.power_levels event at all
    unreadable: bool = False  # none of the bridge's users can read it (left unusable by a crash)
    parents: frozenset[str] = frozenset()  # room ids of m.space.parent

    def current(self) -> set[str]:
        return {u for u, m in self.members.items() if m in ("join", "invite")}


@dataclass(frozen=True)
class ObservedState:
    rooms: Mapping[str, ObservedRoom] = field(default_factory=dict)


# The state the planner reads (and the observer watches for changes): membership, power, texts,
# Space links, retention, and the security state, which someone with power may change after creation.
SECURITY_TYPES = ("m.room.encryption", "m.room.join_rules", "m.room.history_visibility", "m.room.guest_access")
PLANNED_TYPES = ("m.room.member", "m.room.power_levels", "m.room.name", "m.room.topic", "m.space.child",
                 "m.space.parent", "m.room.retention", *SECURITY_TYPES)


def reduce_state(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Only what `from_state_events` reads, to keep in the cache: a member is their membership
    and who set it, never their display name or avatar (pure)."""
    out: list[dict[str, Any]] = []
    for ev in events:
        etype = ev.get("type")
        if etype not in PLANNED_TYPES:
            continue
        content = ev.get("content") or {}
        if etype == "m.room.member":
            content = {"membership": content.get("membership", "leave")}
        out.append({"type": etype, "state_key": ev.get("state_key"), "sender": ev.get("sender"), "content": content})
    return out


# What a delta /sync carries to fold a room's changes into its cached state: the planned types, and
# redactions (a redacted state event loses content the delta does not show: such a room is read again).
DELTA_TIMELINE_TYPES = (*PLANNED_TYPES, "m.room.redaction")


def changed_rooms(sync_response: Mapping[str, Any]) -> set[str]:
    """Room ids an incremental /sync (filtered on PLANNED_TYPES) shows with any change (pure)."""
    rooms = sync_response.get("rooms") or {}
    return {rid for section in ("join", "leave", "invite", "knock") for rid in (rooms.get(section) or {})}


def joined_changes(sync_response: Mapping[str, Any]) -> set[str]:
    """The changed rooms the syncing user is joined to: the only ones whose delta can be folded (pure)."""
    return set(((sync_response.get("rooms") or {}).get("join")) or {})


def fold_delta(cached: list[dict[str, Any]] | None, entry: Mapping[str, Any],
               user: str) -> list[dict[str, Any]] | None:
    """A joined room's state now, from its state at the token and its entry in `user`'s
    incremental /sync since that token (filtered on planned types, members not lazy-loaded); None
    where the entry can't be trusted to hold every change, so the room must be read whole (pure).

    The homeserver sends the state block (changes before the timeline), then the timeline. A room
    `user` made since the token comes whole (Synapse sends a room newly joined with its full state,
    its timeline marked `limited`): it is recognised by the user's own join replacing no earlier
    membership, so nothing but the creation came before it. A room joined on an invite is not
    whole: Synapse leaves out of the delta the state that history visibility hid before the join.
    Otherwise the cached state is needed, and a `limited` timeline is refused: the state block
    names only what differs from the token's state, which the cache may not equal (it was read a
    moment after that token)."""
    state = [e for e in ((entry.get("state") or {}).get("events") or []) if isinstance(e, dict)]
    timeline = entry.get("timeline") or {}
    events = [e for e in (timeline.get("events") or []) if isinstance(e, dict)]
    if any(e.get("type") == "m.room.redaction" for e in events):
        return None
    whole = any(e.get("type") == "m.room.member" and e.get("state_key") == user and e.get("sender") == user
                and (e.get("content") or {}).get("membership") == "join"
                and not (e.get("unsigned") or {}).get("replaces_state") for e in state + events)
    if not whole and (cached is None or timeline.get("limited")):
        return None
    folded = {} if whole else {(e.get("type"), e.get("state_key")): e for e in cached or []}
    for ev in reduce_state([e for e in state + events if isinstance(e.get("state_key"), str)]):
        folded[(ev["type"], ev["state_key"])] = ev
    return list(folded.values())


def from_state_events(key: str, room_id: str, events: list[dict[str, Any]], *, archived: bool = False) -> ObservedRoom:
    """Fold a room's /state answer into an ObservedRoom (pure)."""
    members: dict[str, str] = {}
    power: Mapping[str, Any] = {}
    name = topic = ""
    children: set[str] = set()
    parents: set[str] = set()
    retention: int | None = None
    by_choice: set[str] = set()
    security: dict[str, str | None] = {}
    has_power = False
    for ev in events:
        etype, skey, content = ev.get("type"), ev.get("state_key"), ev.get("content") or {}
        if etype == "m.room.member" and skey:
            members[skey] = str(content.get("membership", "leave"))
            if members[skey] == "leave" and ev.get("sender") == skey:
                by_choice.add(skey)
        elif etype == "m.room.power_levels":
            power, has_power = content, True
        elif etype == "m.room.name":
            name = str(content.get("name", ""))
        elif etype == "m.room.topic":
            topic = str(content.get("topic", ""))
        elif etype == "m.space.child" and skey and content.get("via"):
            children.add(skey)
        elif etype == "m.space.parent" and skey and content.get("via"):
            parents.add(skey)
        elif etype == "m.room.retention" and isinstance(content.get("max_lifetime"), int):
            retention = content["max_lifetime"]
        elif etype in SECURITY_TYPES and skey == "":
            field = _SECURITY_FIELD[str(etype)]
            value = content.get(field)
            security[str(etype)] = value if isinstance(value, str) else ""  # present but unreadable: repaired
    return ObservedRoom(key, room_id, members, power, name, topic, frozenset(children), archived, retention,
                        left_by_choice=frozenset(by_choice), encryption=security.get("m.room.encryption"),
                        join_rule=security.get("m.room.join_rules"),
                        history_visibility=security.get("m.room.history_visibility"),
                        guest_access=security.get("m.room.guest_access"), has_power_levels=has_power,
                        parents=frozenset(parents))


_SECURITY_FIELD = {"m.room.encryption": "algorithm", "m.room.join_rules": "join_rule",
                   "m.room.history_visibility": "history_visibility", "m.room.guest_access": "guest_access"}
