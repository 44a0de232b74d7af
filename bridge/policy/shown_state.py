"""What room state shows as someone's words (pure): a member's name, the reason given with a
membership, a room's name and topic.

State events are never encrypted, so they reach the bridge with the homeserver's transactions in
every room, and clients draw them as text: a per-room display name sits beside each of the
person's messages, a leave or knock reason appears in the timeline. Read like a message's words
(banned words, links, size), they are not messages: no flood, no fan-out, no quiet hours.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.policy.texts import Malformed, string_at, text_blocks

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
