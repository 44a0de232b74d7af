"""Rooms from the directory on a real Synapse: exact membership and power, idempotence, changes, guards."""

from __future__ import annotations

import copy
import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.clock import FixedTime
from bridge.matrix.appservice_api import AppserviceAPI
from bridge.reconcile.actions import Kick
from bridge.reconcile.observed import reduce_state
from bridge.reconcile.sync import run_sync
from bridge.store import open_store
from tests.conftest import unique_school

pytestmark = pytest.mark.synapse
FIX = Path(__file__).parent / "fixtures"
NOW = datetime(2026, 11, 29, tzinfo=UTC)


class Harness:
    def __init__(self, config: Any, tmp: Path) -> None:
        self.config = config
        self.tmp = tmp
        self.data = unique_school(tmp)
        self.store: Any = None
        self.api = AppserviceAPI(base_url=config.homeserver.url, as_token=config.appservice.as_token)

    async def open(self) -> Harness:
        self.store = await open_store(self.config.database_url)
        return self

    async def close(self) -> None:
        await self.api.close()
        await self.store.close()

    def write(self) -> str:
        path = self.tmp / "dir.yaml"
        path.write_text(yaml.safe_dump(self.data, allow_unicode=True))
        return str(path)

    async def sync(self, *, apply: bool = True, allow: bool = False) -> Any:
        return await run_sync(self.config, [self.write()], store=self.store, api=self.api, apply=apply,
                              allow_mass_removal=allow, clock=FixedTime(NOW))

    async def check_homeserver_matches(self, result: Any) -> None:
        await self.check_homeserver_matches_as(result, self.config.bot_user_id)

    async def check_homeserver_matches_as(self, result: Any, reader: str) -> None:
        """Invariant 1, read straight from the homeserver's room state."""
        for key, room in result.plan.desired.items():
            rec = await self.store.get_room(key)
            assert rec is not None, key
            owner = room.owner or self.config.bot_user_id
            state = await self.api.room_state(rec.room_id, as_user=owner)
            members = {e["state_key"] for e in state if e["type"] == "m.room.member"
                       and e["content"].get("membership") in ("join", "invite")}
            assert members - {owner} == set(room.members), key
            power = next(e["content"] for e in state if e["type"] == "m.room.power_levels")
            bridge_users = {self.config.bot_user_id, self.config.keyless_user_id}
            assert {u: v for u, v in power["users"].items() if u not in bridge_users} == dict(
                room.power_levels["users"]), key
            enc = [e for e in state if e["type"] == "m.room.encryption"]
            assert bool(enc) == room.encrypted, key
            if room.encrypted:
                assert enc[0]["content"]["algorithm"] == "m.megolm.v1.aes-sha2"

    async def check_cache_matches_reads(self, result: Any) -> None:
        """The observation cache (folded from /sync deltas) holds what a whole read of each room gives."""
        cache = await self.store.observed_rooms()
        for key, room in result.plan.desired.items():
            rec = await self.store.get_room(key)
            read = reduce_state(await self.api.room_state(rec.room_id, as_user=room.owner or self.config.bot_user_id))
            assert _by_key(json.loads(cache[rec.room_id])) == _by_key(read), key

    def person(self, kind: str, pid: str) -> dict[str, Any]:
        return next(p for p in self.data[kind] if p["id"] == pid)

    def mxid(self, first: str, last: str) -> str:
        return f"@{first.lower()}.{last.lower()}:{self.config.homeserver.server_name}"


@pytest.fixture
async def h(homeserver: Any, data_dir: Path, tmp_path: Path) -> Any:
    harness = await Harness(homeserver.config(data_dir), tmp_path).open()
    yield harness
    await harness.close()


def _by_key(events: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[str, Any]]:
    return {(e["type"], e["state_key"]): (e["sender"], e["content"]) for e in events}


def _kicks(result: Any) -> list[tuple[str, str]]:
    return [(a.room_key.split(":")[0], a.user_id) for a in result.plan.of(Kick)]


async def test_apply_matches_directory_then_replan_is_empty_with_zero_writes(h: Harness) -> None:
    first = await h.sync()
    assert first.verdict.ok and not first.report.failed
    kinds = sorted({k.split(":")[0] for k in first.plan.desired})
    assert kinds == ["class", "family", "moderators", "school", "space", "staff"]
    assert sum(1 for k in first.plan.desired if k.startswith("family:")) == 3
    await h.check_homeserver_matches(first)
    writes_before = h.api.write_count
    second = await h.sync()
    assert second.plan.is_empty(), second.plan.actions[:5]
    assert h.api.write_count == writes_before  # an unchanged directory writes nothing
    # The teacher of CE1 is a moderator of the CE1 room; a guardian is a plain member.
    ce1 = next(r for k, r in first.plan.desired.items() if k.startswith("class:") and ":CE1:" in k)
    assert ce1.power_levels["users"][h.mxid("Marc", "Petit")] == 50
    assert h.mxid("Sara", "Haddad") in ce1.members
    assert h.mxid("Sara", "Haddad") not in ce1.power_levels["users"]
    assert "Inès H." in next(r.name for k, r in first.plan.desired.items() if "p-ines" in k)


async def test_resync_reads_only_rooms_the_homeserver_reports_changed(h: Harness, homeserver: Any) -> None:
    """The incremental observation: an unchanged homeserver costs no room read at all, and a
    change made behind the bridge's back (a stranger invited by hand) is still seen and undone."""
    first = await h.sync()
    assert first.observed.full
    # The apply ends by re-observing the rooms it touched and planning again: nothing left to do.
    assert first.residual is not None and first.residual.is_empty()
    # ... from the homeserver's /sync deltas, not a read of each room: the requests that are not
    # writes are the bridge users' /sync calls and a lookup or two, whatever the number of rooms.
    assert h.api.request_count - h.api.write_count <= 6, h.api.request_count - h.api.write_count
    await h.check_cache_matches_reads(first)
    quiet = await h.sync()
    assert quiet.plan.is_empty() and quiet.observed.read == 0 and quiet.observed.rooms == len(first.plan.desired)
    homeserver.synapse.register_user("resquilleur", "mot-de-passe-resquilleur")
    stranger = f"@resquilleur:{h.config.homeserver.server_name}"
    cp = next(k for k in first.plan.desired if k.startswith("class:") and ":CP:" in k)
    await h.api.invite((await h.store.get_room(cp)).room_id, stranger, as_user=h.config.bot_user_id)
    caught = await h.sync()
    assert caught.observed.read == 1 and ("class", stranger) in _kicks(caught)
    assert caught.observed.folded == 1  # the stranger's invite came with the delta
    await h.check_cache_matches_reads(caught)
    # A full read (`sync --full-read`, or every rooms.full_observe_hours) agrees with the cache.
    full = await run_sync(h.config, [h.write()], store=h.store, api=h.api, apply=False, full_observe=True, clock=FixedTime(NOW))
    assert full.plan.is_empty() and full.observed.full and full.observed.read == len(first.plan.desired)


async def test_directory_changes_move_people(h: Harness) -> None:
    await h.sync()
    # Tom moves from CE1 to CP: his parents stay in CE1? No sibling there -> they leave CE1.
    h.person("pupils", "p-tom")["classes"] = ["CP"]
    # Inès's guardian loses parental authority (becomes a mere contact).
    ines = h.person("pupils", "p-ines")
    ines["contacts"], ines["guardians"] = ["g-sara"], ["g-paul"]
    result = await h.sync()
    assert result.verdict.ok and not result.report.failed
    kicks = _kicks(result)
    anne, sara = h.mxid("Anne", "Martin"), h.mxid("Sara", "Haddad")
    assert ("class", anne) in kicks  # no child left in CE1
    assert ("family", sara) in kicks  # no parental authority, out of the family room
    assert ("class", sara) in kicks
    await h.check_homeserver_matches(result)
    assert (await h.sync(apply=False)).plan.is_empty()


async def test_sibling_keeps_guardian_in_class(h: Harness) -> None:
    h.person("pupils", "p-lina")["classes"] = ["CE1"]  # Lina and Tom both in CE1
    await h.sync()
    h.person("pupils", "p-tom")["classes"] = ["CP"]  # Tom leaves CE1, Lina stays
    result = await h.sync()
    assert ("class", h.mxid("Anne", "Martin")) not in _kicks(result)
    await h.check_homeserver_matches(result)


async def test_teacher_leaving_class_loses_access(h: Harness) -> None:
    await h.sync()
    h.person("staff", "t-cp")["classes"] = []
    result = await h.sync()
    claire = h.mxid("Claire", "Dubois")
    assert ("class", claire) in _kicks(result) and ("family", claire) in _kicks(result)
    await h.check_homeserver_matches(result)


async def test_stranger_invited_by_hand_is_removed(h: Harness, homeserver: Any) -> None:
    first = await h.sync()
    homeserver.synapse.register_user("intrus", "motdepasse-intrus")
    stranger = f"@intrus:{h.config.homeserver.server_name}"
    cp = next(k for k in first.plan.desired if k.startswith("class:") and ":CP:" in k)
    room_id = (await h.store.get_room(cp)).room_id
    await h.api.invite(room_id, stranger, as_user=h.config.bot_user_id)
    result = await h.sync()
    [kick] = result.plan.of(Kick)
    assert (kick.room_key, kick.user_id) == (cp, stranger)
    assert "autorisé" in kick.reason  # French reason, shown to people in the room
    await h.check_homeserver_matches(result)


async def test_guard_refuses_truncated_directory(h: Harness) -> None:
    await h.sync()
    full = copy.deepcopy(h.data)
    h.data["pupils"] = h.data["pupils"][:1]  # a truncated export
    h.data["guardians"] = [g for g in h.data["guardians"] if g["id"] in ("g-anne", "g-paul")]
    refused = await h.sync()
    assert not refused.verdict.ok and refused.report is None
    assert any("shrank" in r for r in refused.verdict.reasons)
    h.data = full
    assert (await h.sync(apply=False)).plan.is_empty()  # nothing was touched
    h.data["pupils"] = h.data["pupils"][:1]
    h.data["guardians"] = [g for g in h.data["guardians"] if g["id"] in ("g-anne", "g-paul")]
    forced = await h.sync(allow=True)
    assert forced.verdict.ok and forced.report is not None and not forced.report.failed
    await h.check_homeserver_matches(forced)


async def test_lost_store_is_rebuilt_from_aliases(h: Harness, tmp_path: Path) -> None:
    first = await h.sync()
    room_ids = {k: (await h.store.get_room(k)).room_id for k in first.plan.desired}
    await h.store.close()
    Path(h.config.database_url[len("sqlite:///"):]).unlink()  # the store is lost
    h.store = await open_store(h.config.database_url)
    again = await h.sync(apply=False)
    assert again.plan.is_empty(), again.plan.actions[:3]
    assert {k: (await h.store.get_room(k)).room_id for k in first.plan.desired} == room_ids


async def test_school_year_rollover_archives_then_empties_after_grace(h: Harness) -> None:
    june = datetime(2026, 6, 1, tzinfo=UTC)
    first = await run_sync(h.config, [h.write()], store=h.store, api=h.api, apply=True, clock=FixedTime(june))
    old_keys = {k for k in first.plan.desired if k.startswith("class:")}
    assert all(k.endswith(":2025-2026") for k in old_keys)
    # 2 August: next year's class rooms are created; last year's become read-only, nobody kicked.
    august = datetime(2026, 8, 2, tzinfo=UTC)
    roll = await run_sync(h.config, [h.write()], store=h.store, api=h.api, apply=True, clock=FixedTime(august))
    assert roll.verdict.ok and not roll.report.failed
    summary = roll.plan.summary()
    assert summary["archive_room"] == len(old_keys) and summary["create_room"] == len(old_keys)
    assert "kick" not in summary
    assert not any(k.startswith("family:") for k in (a.room_key for a in roll.plan.actions))  # families stay
    for key in old_keys:
        rec = await h.store.get_room(key)
        assert rec.archived
        state = await h.api.room_state(rec.room_id, as_user=h.config.bot_user_id)
        assert next(e for e in state if e["type"] == "m.room.power_levels")["content"]["events_default"] == 100
        assert "lecture seule" in next(e for e in state if e["type"] == "m.room.topic")["content"]["topic"]
    assert (await run_sync(h.config, [h.write()], store=h.store, api=h.api, apply=False,
                           clock=FixedTime(datetime(2026, 8, 20, tzinfo=UTC)))).plan.is_empty()
    # After the grace period (30 days), the archived rooms are emptied, guards or not.
    later = datetime(2026, 9, 5, tzinfo=UTC)
    empty = await run_sync(h.config, [h.write()], store=h.store, api=h.api, apply=True, clock=FixedTime(later))
    assert empty.verdict.ok and empty.plan.summary().get("kick", 0) > 0
    for key in old_keys:
        rec = await h.store.get_room(key)
        state = await h.api.room_state(rec.room_id, as_user=h.config.bot_user_id)
        assert {e["state_key"] for e in state if e["type"] == "m.room.member"
                and e["content"]["membership"] in ("join", "invite")} == {h.config.bot_user_id}
    assert (await run_sync(h.config, [h.write()], store=h.store, api=h.api, apply=False, clock=FixedTime(later))).plan.is_empty()


async def test_guardian_who_declines_is_not_reinvited(h: Harness, humans: Any) -> None:
    parent = await humans("parent")
    mapping = h.tmp / "mapping.yaml"
    mapping.write_text(yaml.safe_dump({"g-sara": parent.user_id}))
    h.config = dataclasses.replace(h.config, identity=dataclasses.replace(h.config.identity, mapping_file=mapping))
    first = await h.sync()
    family = next(k for k in first.plan.desired if "p-ines" in k)
    room_id = (await h.store.get_room(family)).room_id
    from tests.conftest import sync_until

    await sync_until(parent, lambda: room_id in parent.invited_rooms)
    await parent.room_leave(room_id)  # declines the invite
    again = await h.sync(apply=False)
    assert again.plan.is_empty() and any("declined" in n for n in again.plan.notes)


async def test_switching_content_inspection_hands_rooms_over(h: Harness, tmp_path: Path) -> None:
    """A profile switched to `content_inspection: false`: existing family rooms pass from the bot
    to the keyless user (the bot leaves, so no client shares keys with it any more), and back."""
    import shutil

    policies = tmp_path / "policies"
    shutil.copytree(Path(__file__).resolve().parent.parent / "policies", policies)
    h.config = dataclasses.replace(h.config, policies_dir=policies)
    first = await h.sync()
    family = sorted(k for k in first.plan.desired if k.startswith("family:"))
    bot, keyless = h.config.bot_user_id, h.config.keyless_user_id

    async def holders(key: str) -> tuple[set[str], dict[str, int]]:
        rec = await h.store.get_room(key)
        try:
            state = await h.api.room_state(rec.room_id, as_user=keyless)
        except Exception:  # noqa: BLE001 - not (yet) in the room: read as the bot
            state = await h.api.room_state(rec.room_id, as_user=bot)
        joined = {e["state_key"] for e in state if e["type"] == "m.room.member"
                  and e["content"]["membership"] == "join"} & {bot, keyless}
        return joined, next(e["content"] for e in state if e["type"] == "m.room.power_levels")["users"]

    mod = policies / "moderation.yaml"
    mod.write_text(mod.read_text().replace("content_inspection: true", "content_inspection: false"))
    handed = await h.sync()
    assert handed.verdict.ok and not handed.report.failed, handed.report.failed
    assert handed.plan.summary().get("transfer_room", 0) >= len(family)
    assert "kick" not in handed.plan.summary()
    for key in family:
        joined, users = await holders(key)
        assert joined == {keyless} and users.get(keyless) == 100
    await h.check_homeserver_matches_as(handed, keyless)
    assert (await h.sync(apply=False)).plan.is_empty()
    # A lost store finds the keyless user's rooms too (by their aliases).
    room_ids = {k: (await h.store.get_room(k)).room_id for k in handed.plan.desired}
    await h.store.close()
    Path(h.config.database_url[len("sqlite:///"):]).unlink()
    h.store = await open_store(h.config.database_url)
    assert (await h.sync(apply=False)).plan.is_empty()
    assert {k: (await h.store.get_room(k)).room_id for k in handed.plan.desired} == room_ids
    mod.write_text(mod.read_text().replace("content_inspection: false", "content_inspection: true"))
    back = await h.sync()
    assert back.verdict.ok and not back.report.failed, back.report.failed
    for key in family:
        assert (await holders(key))[0] == {bot}
    assert (await h.sync(apply=False)).plan.is_empty()
