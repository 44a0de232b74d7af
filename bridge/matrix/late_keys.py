"""An encrypted event the bot's sync could not decrypt, read again with the keys the bot holds now."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nio import MegolmEvent, ReactionEvent
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
    if source.get("type") not in MESSAGE_TYPES:
        return LateRead(True)  # decrypted, and nothing clients show as a message (a custom type)
    return LateRead(True, *received_of(parsed.room_id, parsed.event_id, parsed.sender, decrypted, decrypted=True))


def received_of(room_id: str, event_id: str, sender: str, event: Any, *, decrypted: bool
                ) -> tuple[ReceivedMessage, ReceivedReaction | None]:
    """What the hooks get of a nio event of `MESSAGE_TYPES` (from the sync, or read late): the
    message, and the reaction it is when it is one."""
    source = getattr(event, "source", None) or {}
    content = source.get("content")
    msg = ReceivedMessage.of(room_id, event_id, sender, str(source.get("type")),
                             dict(content) if isinstance(content, dict) else {}, decrypted=decrypted)
    reaction = ReceivedReaction(room_id, event_id, sender, str(event.reacts_to), str(event.key)) \
        if isinstance(event, ReactionEvent) else None
    return msg, reaction
