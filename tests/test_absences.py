"""Absences: a teacher's `!absent jusqu'au …` answers families once a day in that teacher's family
rooms, until `!présent` (on the fake homeserver, with the moderator's rooms and the snapshot's roles)."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from typing import Any

import pytest
from nio import RoomMessageNotice

from bridge.absences import Absences, parse
from bridge.access.links import relations
from bridge.access.snapshot import AccessSnapshot, write_snapshot
from bridge.app import Bridge
from bridge.clock import FixedTime
from bridge.directory.sources import load
from bridge.matrix.received import ReceivedMessage
from bridge.policy.model import AccessPolicy
from bridge.reconcile.sync import run_sync
from tests.conftest import bot_sees, sync_until, unique_school, with_people, write_school
from tests.test_app_on_fake import running  # noqa: F401 - the fixture
from tests.test_pause import _desk

MONDAY = datetime(2026, 11, 30, 9, tzinfo=UTC)


def test_parse_dates_and_mistakes() -> None:
    today = date(2026, 11, 30)
    assert parse("!absent jusqu'au 2026-12-12 Formation à Lyon", today=today) == (date(2026, 12, 12),
                                                                                   "Formation à Lyon")
    assert parse("!absent jusqu’au 12/12/2026", today=today) == (date(2026, 12, 12), "")
    assert parse("!absent until 2026-12-01  back  soon", today=today) == (date(2026, 12, 1), "back soon")
    assert parse("!absent jusqu'au 2026-11-01", today=today) == "past"
    assert parse("!absent demain", today=today) == "usage"
    assert parse("!absent jusqu'au 2026-02-30", today=today) == "usage"


def _msg(room: str, sender: str, body: str) -> ReceivedMessage:
    return ReceivedMessage(room, "$m", sender, body, True, {"msgtype": "m.text", "body": body})


async def test_families_get_one_answer_a_day_until_the_teacher_is_back(running: Any, tmp_path: Any) -> None:
    bridge, _, info = running
    mod, _ = await _desk(bridge)
    known = await bridge.store.identities()
    directory, _ = load([str(info["src"])])
    write_snapshot(tmp_path / "access.sqlite", relations(directory, known, AccessPolicy(), secret="s" * 32), [], {},
                   generated_ms=1)
    absences = Absences(moderator=mod, store=bridge.store, snapshot=AccessSnapshot(tmp_path / "access.sqlite"),
                        rooms_of=lambda u: [r for r, people in bridge.outsiders.entitled.items() if u in people],
                        clock=FixedTime(MONDAY))
    claire, anne, sara = known["t-cp"], known["g-anne"], known["g-sara"]
    lina = next(r.room_id for r in await bridge.store.all_rooms() if r.room_key.endswith("p-lina"))
    ines = next(r.room_id for r in await bridge.store.all_rooms() if r.room_key.endswith("p-ines"))

    assert "pour l'équipe" in (await absences.command(_msg("!dm", anne, "!absent jusqu'au 2026-12-12")) or "")
    answer = await absences.command(_msg("!dm", claire, "!absent jusqu'au 2026-12-12 En formation."))
    assert answer is not None and "12/12/2026" in answer
    notices = mod.bot.notices

    await absences.on_message(_msg(lina, anne, "Bonjour, une question sur les devoirs"))
    await absences.on_message(_msg(lina, anne, "Et une autre"))  # the same day: no second answer
    await absences.on_message(_msg(ines, sara, "Bonjour"))  # Claire doesn't teach Inès: no answer
    answers = [text for room, text in notices if "absent" in text]
    assert answers == [f"{claire} est absent·e jusqu'au 12/12/2026 inclus. En formation. "
                       "Votre message sera lu à son retour."]
    absences.clock = FixedTime(datetime(2026, 12, 1, 9, tzinfo=UTC))  # the next day: one answer again
    await absences.on_message(_msg(lina, anne, "Re-bonjour"))
    assert len([t for _, t in notices if "absent" in t]) == 2
    assert await absences.command(_msg("!dm", claire, "!présent")) is not None
    await absences.on_message(_msg(lina, anne, "Vous êtes là ?"))
    assert len([t for _, t in notices if "absent" in t]) == 2  # back: no more answers
    await mod.stop()


@pytest.mark.synapse
async def test_an_absence_answers_a_parent_once_a_day_on_synapse(homeserver: Any, data_dir: Any, tmp_path: Any,
                                                                 humans: Any) -> None:
    """Claire tells the bot, in an encrypted direct chat, that she is away; Anne writes twice in
    Lina's follow-up room and gets one answer (encrypted), with the date of return."""
    teacher, parent = await humans("claire"), await humans("anne")
    config = with_people(homeserver.config(data_dir), tmp_path, {"t-cp": teacher.user_id, "g-anne": parent.user_id})
    bridge = await Bridge.create(config)
    await bridge.start()
    try:
        school = str(write_school(tmp_path, unique_school(tmp_path)))
        await run_sync(config, [school], store=bridge.store, api=bridge.api, apply=True)
        await bridge.ops.restore()
        await bridge.moderator.refresh_rooms()
        bot = config.bot_user_id
        dm = (await teacher.room_create(is_direct=True, invite=[bot], initial_state=[
            {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}])).room_id
        await sync_until(teacher, lambda: dm in teacher.rooms and bot in teacher.rooms[dm].users)
        await bridge.bot.wait_for_room(dm)
        await teacher.room_send(dm, "m.room.message", {"msgtype": "m.text", "body": "!absent jusqu'au 2099-12-12 "
                                                       "En formation."}, ignore_unverified_devices=True)
        for _ in range(1200):  # until the bot took it (a hang guard)
            if await bridge.store.get_value("absences"):
                break
            await asyncio.sleep(0.1)
        assert await bridge.store.get_value("absences")
        lina = next(r.room_id for r in await bridge.store.all_rooms() if r.room_key.endswith("p-lina"))
        await sync_until(parent, lambda: lina in parent.invited_rooms)
        await parent.join(lina)
        await sync_until(parent, lambda: lina in parent.rooms)
        await bot_sees(bridge, lina, parent.user_id)
        answers: list[Any] = []
        seen: list[str] = []

        async def bot_saw(msg: Any) -> None:
            if msg.room_id == lina and msg.sender == parent.user_id:
                seen.append(msg.body)

        bridge.bot.message_hooks.append(bot_saw)

        async def on_notice(room: Any, event: Any) -> None:
            if room.room_id == lina and event.sender == bot and "absent" in event.body:
                answers.append(event)

        parent.add_event_callback(on_notice, RoomMessageNotice)
        for body in ("Bonjour, une question", "Et une autre"):
            await parent.room_send(lina, "m.room.message", {"msgtype": "m.text", "body": body},
                                   ignore_unverified_devices=True)
        await sync_until(parent, lambda: bool(answers))
        for _ in range(1200):  # until the bot handled both messages (a hang guard)
            if len(seen) == 2:
                break
            await asyncio.sleep(0.1)
        for _ in range(3):  # what the bot sent meanwhile reaches the parent
            await parent.sync(timeout=1000)
        assert len(seen) == 2 and len(answers) == 1 and answers[0].decrypted and "12/12/2099" in answers[0].body
        assert "En formation." in answers[0].body
    finally:
        await bridge.stop()
