"""Encrypted messages moderation can't read (pure): how long to wait for their keys, and then what.

A client shares a message's key with the room's devices before it sends the message, so the bot
normally reads it at once. A key can come a little late (a busy homeserver, several syncs of
to-device messages), so an unread message is looked at again once the bot has synced past it.
After that, a message still unread is one whose key was kept from the bot: a crafted client, or
one set to share only with devices its user verified. Let through, it would be the one message
nobody moderates; it is taken down instead, and its sender told how to fix their app.
"""

from __future__ import annotations

from bridge.policy.engine import Decision

GRACE_MS = 60_000  # from the first sight of the message
SYNCS = 2  # the bot's syncs completed since then: what came with the message (its key) was read
ACTIONS = ("redact", "warn", "report")
REASON = "message chiffré illisible par la modération : clé non partagée avec l'ENT"
MAX_WAIT_MS = 3_600_000


def look_again_at(*, first_ms: int, now_ms: int, syncs_since: int, grace_ms: int = GRACE_MS) -> int | None:
    """When to look at an unread message again (ms), or None: decide now. A bot that is not
    syncing (the homeserver down) is waited for, each wait twice the last, up to an hour."""
    if now_ms < first_ms + grace_ms:
        return first_ms + grace_ms
    if syncs_since < SYNCS:
        return now_ms + min(MAX_WAIT_MS, max(1_000, now_ms - first_ms))
    return None


def unreadable() -> Decision:
    """The decision about a message nobody let moderation read."""
    return Decision("undecryptable", ACTIONS, REASON)
