"""A school-wide pause (!pause / !reprise) on the fake homeserver: rooms read-only but for staff,
the exact power levels back afterwards, also after a restart, and syncs keep the pause."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.audit import AuditLog
from bridge.errors import MForbidden
from bridge.matrix.received import ReceivedMessage
from bridge.moderation import Moderator
from bridge.pause import SchoolPause
from bridge.reconcile.actions import SetPowerLevels
from bridge.reconcile.sync import run_sync
from tests.conftest import ROOT
from tests.test_app_on_fake import running  # noqa: F401 - the fixture


class _Bot:
    client = None

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.notices: list[tuple[str, str]] = []

    async def send_notice(self, room_id: str, text: str, **_: Any) -> str:
        self.notices.append((room_id, text))
        return "$n"


async def _desk(bridge: Any) -> tuple[Moderator, SchoolPause]:
    mod = Moderator(policies_dir=ROOT / "policies", store=bridge.store, api=bridge.api,
                    bot=_Bot(bridge.config.bot_user_id), audit=AuditLog(bridge.store, key="k" * 32))  # type: ignore[arg-type]
    await mod.start()
    director = "@director:ent.test"

    async def power(room_id: str, user_id: str) -> int:
        return 100 if user_id == director else 0

    mod.power = power  # type: ignore[method-assign]
    return mod, SchoolPause(moderator=mod, api=bridge.api, store=bridge.store, audit=mod.audit, admins=frozenset(),
                            clock=bridge.ops.clock)


def _command(room_id: str, sender: str, body: str) -> ReceivedMessage:
    return ReceivedMessage(room_id, "$c", sender, body, True, {"msgtype": "m.text", "body": body})


async def test_pause_and_resume_a_school(running: Any) -> None:
    bridge, fake, _ = running
    mod, desk = await _desk(bridge)
    (school, reports), = mod.reports_room.items()
    rooms = sorted(r for r, uai in mod.room_school.items() if uai == school and r != reports)
    before = {r: await bridge.api.get_state(r, "m.room.power_levels", as_user=bridge.config.bot_user_id)
              for r in rooms}
    klass = next(r.room_id for r in await bridge.store.all_rooms() if r.template == "class")
    parent = next(u for u in sorted(fake.room(klass).members("invite", "join"))
                  if before[klass]["users"].get(u, 0) == 0 and u != bridge.config.bot_user_id)
    fake.store.join(fake.room(klass), parent)

    await desk.on_message(_command(reports, "@parent:ent.test", "!pause"))  # not the director: refused
    assert "seuls la direction" in mod.bot.notices[-1][1]
    await desk.on_message(_command(reports, "@director:ent.test", "!pause menaces reçues"))
    assert f"Pause : {len(rooms)} salons" in mod.bot.notices[-1][1]
    assert any("menaces reçues" in text for room, text in mod.bot.notices if room == klass)
    with pytest.raises(MForbidden):  # a family can't write any more
        await bridge.api.send_event(klass, "m.room.message", {"msgtype": "m.text", "body": "?"}, as_user=parent,
                                    txn_id="p1")
    # A sync during the pause keeps it: nothing to "repair".
    result = await run_sync(bridge.config, list(bridge.config.directory_sources), store=bridge.store, api=bridge.api,
                            apply=True)
    assert not result.plan.of(SetPowerLevels) and result.residual is not None and result.residual.is_empty()
    assert (await bridge.api.get_state(klass, "m.room.power_levels", as_user=bridge.config.bot_user_id)
            )["events_default"] == 50

    # After a restart (a new desk over the same store), !reprise puts back exactly what was there.
    await mod.stop()
    mod2, desk2 = await _desk(bridge)
    await desk2.on_message(_command(reports, "@director:ent.test", "!reprise"))
    after = {r: await bridge.api.get_state(r, "m.room.power_levels", as_user=bridge.config.bot_user_id)
             for r in rooms}
    assert after == before
    await bridge.api.send_event(klass, "m.room.message", {"msgtype": "m.text", "body": "merci"}, as_user=parent,
                                txn_id="p2")
    await desk2.on_message(_command(reports, "@director:ent.test", "!reprise"))
    assert "n'est pas en pause" in mod2.bot.notices[-1][1]
    audit = [r.body for r in await bridge.store.audit_rows()]
    assert any("school_pause" in b for b in audit) and any("school_resume" in b for b in audit)
    await mod2.stop()
