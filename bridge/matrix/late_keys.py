"""An encrypted event the bot's sync could not decrypt, read again with the keys the bot holds now."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nio import MegolmEvent
from nio.exceptions import EncryptionError

from bridge.matrix.received import MESSAGE_TYPES, ReceivedMessage, ReceivedReaction


@dataclass(frozen=True)
class LateRead:
    """read: decrypted now; message: what moderation has to read in it; reaction: an annotation
    (a family's confirmation of an announcement, say) for the reaction hooks."""

    read: bool
    message: ReceivedMessage | None = None
    reaction: ReceivedReaction | None = None


def read_late(client: Any, event: dict[str, Any]) -> LateRead:
    """A key that reached the bot after the message did (the sync read them in that order) is in
    nio's store by now; an event not of the Megolm shape is not readable."""
    if client is None or client.olm is None:
        return LateRead(False)
    parsed = MegolmEvent.from_dict(event)
    if not isinstance(parsed, MegolmEvent):
        return LateRead(False)
    parsed.room_id = str(event.get("room_id"))
    try:
        decrypted = client.decrypt_event(parsed)
    except EncryptionError:
        return LateRead(False)
    source = getattr(decrypted, "source", None) or {}
    etype, content = source.get("type"), source.get("content")
    if etype not in MESSAGE_TYPES:
        return LateRead(True)  # decrypted, and nothing clients show as a message (a custom type)
    content = dict(content) if isinstance(content, dict) else {}
    message = ReceivedMessage.of(parsed.room_id, parsed.event_id, parsed.sender, str(etype), content, decrypted=True)
    return LateRead(True, message, _reaction(message) if etype == "m.reaction" else None)


def _reaction(msg: ReceivedMessage) -> ReceivedReaction | None:
    relates = msg.content.get("m.relates_to")
    if not isinstance(relates, dict) or relates.get("rel_type") != "m.annotation":
        return None
    target, key = relates.get("event_id"), relates.get("key")
    if not isinstance(target, str) or not isinstance(key, str):
        return None
    return ReceivedReaction(msg.room_id, msg.event_id, msg.sender, target, key)
