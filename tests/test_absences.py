"""Absences: a teacher's `!absent jusqu'au …` answers families once a day in that teacher's family
rooms, until `!présent` (on the fake homeserver, with the moderator's rooms and the snapshot's roles)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from bridge.absences import Absences, parse
from bridge.access.links import relations
from bridge.access.snapshot import AccessSnapshot, write_snapshot
from bridge.clock import FixedTime
from bridge.directory.sources import load
from bridge.matrix.bot import ReceivedMessage
from bridge.policy.model import AccessPolicy
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
