"""What the bot hands its hooks: a received message or reaction, and how hooks are run."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeVar

from bridge.logging import get_logger
from bridge.policy.engine import REACTION
from bridge.policy.texts import POLL_KEYS, Malformed, message_texts

log = get_logger(component="bot")

# The events a room shows as someone's words: what moderation reads, whatever shape they come in.
MESSAGE_TYPES = frozenset({"m.room.message", "m.sticker", REACTION, *POLL_KEYS})


@dataclass(frozen=True)
class ReceivedMessage:
    """What the bot learnt from a decrypted message; the body stays out of logs."""

    room_id: str
    event_id: str
    sender: str
    body: str
    decrypted: bool
    content: dict[str, Any]
    type: str = "m.room.message"  # or a sticker, a reaction, a poll (MESSAGE_TYPES)

    @classmethod
    def of(cls, room_id: str, event_id: str, sender: str, etype: str, content: dict[str, Any], *,
           decrypted: bool) -> ReceivedMessage:
        """From an event's parts, as they came: a body that is no string is no body."""
        body = content.get("body")
        return cls(room_id, event_id, sender, body if isinstance(body, str) else "", decrypted, content, etype)

    @cached_property
    def is_new_text(self) -> bool:
        """A new text message (a reply counts): not an edit, a notice, or a relation such as a
        thread or an annotation, and of the shape the spec gives it. Only these are ever taken as
        commands: what moderation takes down as malformed is nobody's command. (Asked by each
        hook in turn: worked out once.)"""
        relation = self.content.get("m.relates_to")
        if not (self.type == "m.room.message" and self.content.get("msgtype") == "m.text"
                and isinstance(self.content.get("body"), str) and "m.new_content" not in self.content
                and not (isinstance(relation, dict) and relation.get("rel_type"))):
            return False
        try:
            message_texts(self.content)
        except Malformed:
            return False
        return True


MessageHook = Callable[[ReceivedMessage], Awaitable[None]]


@dataclass(frozen=True)
class ReceivedReaction:
    room_id: str
    event_id: str
    sender: str
    reacts_to: str
    key: str


ReactionHook = Callable[[ReceivedReaction], Awaitable[None]]
Received = TypeVar("Received", ReceivedMessage, ReceivedReaction)


async def run_hooks(hooks: list[Callable[[Received], Awaitable[None]]], item: Received, *, room_id: str,
                     event_id: str) -> None:
    """Each hook in turn; one that fails is logged and must not stop the sync loop, nor the others."""
    for hook in hooks:
        try:
            await hook(item)
        except Exception as exc:  # noqa: BLE001 - see above
            log.error("bot_hook_failed", room_id=room_id, event_id=event_id, error=f"{type(exc).__name__}: {exc}")
