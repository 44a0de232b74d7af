"""Encrypted messages the bot can't read are not let through unread (imperative shell).

Every encrypted message of a room moderation reads comes with the homeserver's transactions,
durably, whether or not the bot's sync decrypts it. Here each one the bot has not decrypted is
held on record (the dispatcher looks at it again when it is due) until the bot has synced past
it; then it is read with the keys the bot holds by then, and moderated like any decrypted
message, or, still unreadable, taken down and reported (`policy.unreadable`). Without this, a
client that keeps its keys from the bot's device would write the one message nobody moderates.
"""

from __future__ import annotations

from typing import Any

from bridge.clock import SYSTEM, Clock
from bridge.errors import NotYet
from bridge.logging import get_logger
from bridge.matrix.received import ReceivedMessage
from bridge.moderation import Moderator
from bridge.policy.unreadable import GRACE_MS, look_again_at

log = get_logger(component="moderation")
ENCRYPTED = "m.room.encrypted"
# The bot's sync usually decrypts a message within moments of the transaction bringing it: waited
# for here, in memory, so the common case puts nothing more on record than the transaction did.
WAIT_S = 5.0
FRESH_MS = 30_000  # a message sent this recently is one the bot's sync is about to bring
WATCHED_MAX = 50_000  # messages waiting for their key, remembered in memory (a restart starts them again)


class UndecryptableWatch:
    def __init__(self, moderator: Moderator, *, clock: Clock = SYSTEM, grace_ms: int = GRACE_MS,
                 wait_s: float = WAIT_S) -> None:
        self.moderator = moderator
        self.clock = clock
        self.grace_ms = grace_ms
        self.wait_s = wait_s
        self._first: dict[str, tuple[int, int]] = {}  # event id -> (first seen ms, the bot's syncs then)
        self._slow: dict[str, int] = {}  # room id -> until when its messages are not waited for in memory

    async def on_event(self, event: dict[str, Any]) -> None:
        """Dispatcher hook (after moderation's): raises NotYet while a message waits for its key."""
        if event.get("type") != ENCRYPTED:
            return
        mod, bot = self.moderator, self.moderator.bot
        room_id, event_id, sender = str(event.get("room_id")), str(event.get("event_id")), str(event.get("sender"))
        if sender in (bot.user_id, mod.keyless):
            return
        if bot.client is None:
            # Not started yet: the homeserver resends what came while the bridge was down before
            # the bot is up (the endpoint listens first). Those are exactly the ones to wait for.
            raise NotYet("the bot is not reading yet", until_ms=self.clock.now_ms() + 1_000)
        if not await mod.is_managed(room_id) or mod.keyless_room(room_id):
            return  # keyless rooms are moderated on metadata: nobody there holds keys, by design
        profile = mod.profile_of(room_id)
        if profile is None or not profile.content_inspection:
            return
        if await mod.power(room_id, sender) >= profile.exempt_power:
            return  # the staff's messages are not moderated: nothing to read them for
        sent, now = event.get("origin_server_ts"), self.clock.now_ms()
        # Only a fresh message is waited for in memory, and not in a room where a wait just came
        # to nothing (the room's next events wait behind it): what the homeserver resends after
        # a restart, or a gap the bot did not read, goes on record at once, or a long gap would
        # cost five seconds a message.
        fresh = (isinstance(sent, int) and now - sent < FRESH_MS and event_id not in self._first
                 and self._slow.get(room_id, 0) <= now)
        if await bot.has_decrypted(event_id, wait_s=self.wait_s if fresh else 0.0):
            self._first.pop(event_id, None)
            return
        if fresh:
            self._slow[room_id] = now + FRESH_MS
        now = self.clock.now_ms()
        first = self._first.setdefault(event_id, (now, bot.syncs))
        if len(self._first) > WATCHED_MAX:
            del self._first[next(iter(self._first))]
        due = look_again_at(first_ms=first[0], now_ms=now, syncs_since=bot.syncs - first[1], grace_ms=self.grace_ms)
        if due is not None:
            raise NotYet("an encrypted message the bot has not read yet", until_ms=due)
        if await bot.read_late(event, first=mod.on_decrypted):
            self._first.pop(event_id, None)
            return
        log.warning("moderation_unreadable", room_id=room_id, event_id=event_id, sender=sender,
                    waited_ms=now - first[0])
        await mod.on_unreadable(ReceivedMessage(room_id, event_id, sender, "", False, {}, ENCRYPTED))
        self._first.pop(event_id, None)
