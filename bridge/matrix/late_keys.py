"""An encrypted event the bot's sync could not decrypt, read again with the keys the bot holds now."""

from __future__ import annotations

from typing import Any

from nio import MegolmEvent
from nio.exceptions import EncryptionError

from bridge.matrix.received import MESSAGE_TYPES, ReceivedMessage


def read_late(client: Any, event: dict[str, Any]) -> tuple[bool, ReceivedMessage | None]:
    """(was it read, the message it is if moderation has anything to read in it). A key that
    reached the bot after the message did (the sync read them in that order) is in nio's store
    by now; an event not of the Megolm shape is not readable."""
    if client is None or client.olm is None:
        return False, None
    parsed = MegolmEvent.from_dict(event)
    if not isinstance(parsed, MegolmEvent):
        return False, None
    parsed.room_id = str(event.get("room_id"))
    try:
        decrypted = client.decrypt_event(parsed)
    except EncryptionError:
        return False, None
    source = getattr(decrypted, "source", None) or {}
    etype, content = source.get("type"), source.get("content")
    if etype not in MESSAGE_TYPES:
        return True, None  # decrypted, and nothing clients show as a message (a custom type)
    return True, ReceivedMessage.of(parsed.room_id, parsed.event_id, parsed.sender, str(etype),
                                    dict(content) if isinstance(content, dict) else {}, decrypted=True)
