"""What room state shows as someone's words (pure): a member's name, the reason given with a
membership, a room's name and topic.

State events are never encrypted, so they reach the bridge with the homeserver's transactions in
every room, and clients draw them as text: a per-room display name sits beside each of the
person's messages, a leave or knock reason appears in the timeline. Read like a message's words
(banned words, links, size), they are not messages: no flood, no fan-out, no quiet hours.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from bridge.policy.protections.text import staff_name
from bridge.policy.texts import Malformed, string_at, text_blocks
from bridge.reconcile.requests import privileged_creators

MEMBER = "m.room.member"
# Event type -> the keys of its content that clients show as text.
SHOWN_KEYS: Mapping[str, tuple[str, ...]] = {
    MEMBER: ("displayname", "reason"),
    "m.room.name": ("name",),
    "m.room.topic": ("topic",),
}
SHOWN_STATE = frozenset(SHOWN_KEYS)


def state_texts(etype: str, content: Mapping[str, Any]) -> list[str]:
    """Every text a state event of `etype` (one of SHOWN_STATE) shows; raises Malformed."""
    if not isinstance(content, Mapping):
        raise Malformed("content is not an object")
    texts = [string_at(content, key) for key in SHOWN_KEYS[etype]]
    if etype == "m.room.topic" and content.get("m.topic") is not None:
        # A rich topic (MSC3765): renderings of the same text, which newer clients show instead.
        topic = content["m.topic"]
        if not isinstance(topic, Mapping):
            raise Malformed("m.topic is not an object")
        texts += text_blocks(topic.get("m.text"), "m.topic m.text") if topic.get("m.text") is not None else []
    return [t for t in texts if t]


def room_staff(state: Iterable[Mapping[str, Any]], exempt_power: int) -> tuple[frozenset[str], frozenset[str]]:
    """Who of a room (its state events) is exempt from moderation, by power or as a privileged
    creator, and the display names its exempt members show, in `staff_name` form: a member's
    name is held to them."""
    levels: Mapping[str, Any] = {}
    creators: set[str] = set()
    members = []
    for ev in state:
        etype = ev.get("type")
        if etype == "m.room.power_levels":
            levels = ev.get("content") or {}
        elif etype == "m.room.create":  # from room version 12, creators outrank everyone
            creators = privileged_creators(ev)
        elif etype == MEMBER:
            members.append(ev)
    users, default = levels.get("users") or {}, levels.get("users_default", 0)

    def exempt(user: str) -> bool:
        level = users.get(user, default)
        return user in creators or (isinstance(level, int) and level >= exempt_power)

    people = {*creators, *(str(u) for u in users), *(str(ev.get("state_key")) for ev in members)}
    names = set()
    for ev in members:
        content = ev.get("content") or {}
        user, name = str(ev.get("state_key")), content.get("displayname")
        if content.get("membership") in ("join", "invite") and isinstance(name, str) and exempt(user):
            names.add(staff_name(name))
    names.discard("")
    return frozenset(u for u in people if exempt(u)), frozenset(names)
