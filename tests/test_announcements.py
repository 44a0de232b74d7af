"""Acknowledged announcements on a real Synapse with E2EE clients: a teacher's announcement, two
of three families confirm (a reaction, a reply « lu »), the third alone is reminded, the author
gets the count."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from nio import RoomMessageNotice

from bridge.app import Bridge
from bridge.clock import FixedTime
from bridge.reconcile.sync import run_sync
from tests.conftest import bot_sees, sync_until, unique_school, with_people, write_school

pytestmark = pytest.mark.synapse


async def test_two_of_three_families_confirm_and_only_the_third_is_reminded(
        homeserver: Any, data_dir: Path, tmp_path: Path, humans: Any) -> None:
    marc, anne, sara, luc = [await humans(n) for n in ("marc", "anne", "sara", "luc")]
    school_data = unique_school(tmp_path)
    school_data["guardians"].append({"id": "g-luc", "first_name": "Luc", "last_name": "Bernard"})
    school_data["pupils"].append({"id": "p-zoe", "first_name": "Zoé", "last_name": "Bernard", "classes": ["CE1"],
                                  "guardians": ["g-luc"]})
    config = with_people(homeserver.config(data_dir), tmp_path, {"t-ce1": marc.user_id, "g-anne": anne.user_id, "g-sara": sara.user_id, "g-luc": luc.user_id})
    school = str(write_school(tmp_path, school_data))
    bridge = await Bridge.create(config)
    await bridge.start()
    try:
        await run_sync(config, [school], store=bridge.store, api=bridge.api, apply=True)
        await bridge.moderator.refresh_rooms()
        assert bridge.announcements is not None
        start = FixedTime(bridge.ops.clock.now())
        bridge.announcements.clock = start
        room = next(r.room_id for r in await bridge.store.all_rooms() if ":CE1:" in r.room_key
                    and r.template == "class")
        for human in (marc, anne, sara, luc):
            await sync_until(human, lambda h=human: room in h.invited_rooms)
            await human.join(room)
            await sync_until(human, lambda h=human: room in h.rooms)
        await bot_sees(bridge, room, marc.user_id, anne.user_id, sara.user_id, luc.user_id)
        notices: dict[str, list[Any]] = {h.user_id: [] for h in (marc, anne, sara, luc)}
        for human in (marc, anne, sara, luc):
            async def on_notice(r: Any, event: Any, h: Any = human) -> None:
                if r.room_id == room and event.sender == config.bot_user_id:
                    notices[h.user_id].append(event)
            human.add_event_callback(on_notice, RoomMessageNotice)

        posted = await marc.room_send(room, "m.room.message", {"msgtype": "m.text",
                                                                "body": "!annonce Sortie au musée vendredi"},
                                      ignore_unverified_devices=True)
        await sync_until(anne, lambda: any("confirmer" in e.body for e in notices[anne.user_id]))
        await anne.room_send(room, "m.reaction", {"m.relates_to": {"rel_type": "m.annotation",
                                                                    "event_id": posted.event_id, "key": "✅"}},
                             ignore_unverified_devices=True)
        await sara.sync(timeout=0)
        await sara.room_send(room, "m.room.message", {
            "msgtype": "m.text", "body": "> <@marc> !annonce Sortie au musée vendredi\n\nLu !",
            "m.relates_to": {"m.in_reply_to": {"event_id": posted.event_id}}}, ignore_unverified_devices=True)

        async def confirmed() -> set[str]:
            items = json.loads(await bridge.store.get_value("announcements") or "{}")
            return set(items.get(posted.event_id, {}).get("confirmed", {}))

        for _ in range(1200):  # the bot decrypts both; a hang guard, not a deadline
            if await confirmed() == {anne.user_id, sara.user_id}:
                break
            await asyncio.sleep(0.1)
        assert await confirmed() == {anne.user_id, sara.user_id}

        bridge.announcements.clock = FixedTime(start.now() + timedelta(hours=49))  # past the 48 h reminder
        await bridge.announcements.tick()
        await sync_until(luc, lambda: any("Rappel" in e.body for e in notices[luc.user_id]))
        reminder = next(e for e in notices[luc.user_id] if "Rappel" in e.body)
        assert reminder.decrypted and reminder.source["content"]["m.mentions"]["user_ids"] == [luc.user_id]
        await sync_until(marc, lambda: any("2/3 familles" in e.body for e in notices[marc.user_id]))
        audit = [r.body for r in await bridge.store.audit_rows()]
        assert sum("announcement_confirmed" in b for b in audit) == 2 and not any("musée" in b for b in audit)
    finally:
        await bridge.stop()
