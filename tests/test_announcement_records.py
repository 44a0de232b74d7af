"""Announcements' records under faults (the fake homeserver; the live flow is test_announcements.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bridge.announcements import Announcements
from bridge.audit import AuditLog
from bridge.people_keys import ANNOUNCEMENTS_KEY
from tests.test_moderation_memory import shell  # noqa: F401 - the moderator on the fake homeserver


async def test_a_confirmation_kept_but_not_audited_before_a_crash_is_audited_after(shell: Any) -> None:
    """The store died after keeping a family's confirmation and before its audit entry: handled
    again by the restarted bridge, the confirmation was already kept, so it was never on record.
    The entry is now written first (once), the confirmation kept after it."""
    mod, _fake, room, parent, clock, store = shell
    await store.set_value(ANNOUNCEMENTS_KEY, json.dumps({"$ann": {
        "room": room, "author": "@teacher:ent.test", "at": 0, "reminded": False, "confirmed": {}}}))
    audit = AuditLog(store, key="k" * 32)
    announcements = Announcements(moderator=mod, bot=mod.bot, store=store, audit=audit, snapshot=None, clock=clock)

    async def store_gone() -> int:
        raise ConnectionError("the store went away")

    audit.flush = store_gone  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        await announcements._confirm("$ann", room, parent)
    announcements.audit = AuditLog(store, key="k" * 32)  # the restarted bridge's log: nothing queued
    await announcements._confirm("$ann", room, parent)
    await announcements._confirm("$ann", room, parent)  # and once more: nothing new
    entries = [r.body for r in await store.audit_rows() if "announcement_confirmed" in r.body]
    assert len(entries) == 1 and "$ann" in entries[0]
    assert parent in json.loads(await store.get_value(ANNOUNCEMENTS_KEY) or "{}")["$ann"]["confirmed"]
