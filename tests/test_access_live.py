"""The access module in a real Synapse: the user directory, DMs, invites, joins and state
follow the school directory's relations, as each sync publishes them."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import yaml

from bridge.app import Bridge
from bridge.config import Config, load_config
from bridge.devserver import LocalSynapse, free_port
from bridge.reconcile.sync import run_sync
from bridge.synapse_settings import access_module
from tests.conftest import ROOT, SERVER_NAME, unique_school, write_bridge_files, write_school


@dataclasses.dataclass
class Guarded:
    synapse: LocalSynapse
    config: Config
    snapshot: Path


def _guarded(*, report: bool) -> Iterator[Guarded]:
    workdir = Path(tempfile.mkdtemp(prefix="ent-bridge-access-"))
    snapshot = workdir / "access.sqlite"
    synapse = LocalSynapse(workdir=workdir / "synapse", server_name=SERVER_NAME)
    config_path, reg = write_bridge_files(workdir / "bridge", hs_url=synapse.url, bridge_port=free_port())
    config = load_config(config_path)
    synapse.registrations.append(reg)
    synapse.extra = {
        "user_directory": {"enabled": True, "search_all_users": True},
        "modules": [access_module(snapshot, [config.sender_user_id, config.bot_user_id, config.keyless_user_id],
                                  refresh_seconds=0.5, registration=reg if report else None,
                                  spool=workdir / "synapse" / "refusals" if report else None)],
    }
    synapse.start()
    try:
        yield Guarded(synapse, dataclasses.replace(config, access_snapshot=snapshot), snapshot)
    finally:
        synapse.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def guarded() -> Iterator[Guarded]:
    """A Synapse of its own with the module loaded, and `search_all_users: true`: every account
    is in the directory, so whatever a search leaves out, the module left out."""
    yield from _guarded(report=False)


@pytest.fixture(scope="module")
def reporting() -> Iterator[Guarded]:
    """The same, its module sending its refusals to the bridge (the registration's address): a
    Synapse of its own, so that no other test's refusals reach this one's bridge."""
    yield from _guarded(report=True)


class Person:
    """A logged-in account, spoken to with plain client-server requests."""

    def __init__(self, http: aiohttp.ClientSession, url: str, user_id: str, token: str) -> None:
        self.http, self.url, self.user_id, self.token = http, url, user_id, token

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None, *, version: str = "v3"
                   ) -> tuple[int, Any]:
        while True:  # a rate limit (polling searches on a busy machine) is waited out, as clients do
            async with self.http.request(method, f"{self.url}/_matrix/client/{version}{path}", json=body,
                                         headers={"Authorization": f"Bearer {self.token}"}) as resp:
                status, answer = resp.status, await resp.json()
            if status != 429:
                return status, answer
            await asyncio.sleep(answer.get("retry_after_ms", 1000) / 1000)

    async def search(self, term: str) -> set[str]:
        status, body = await self.call("POST", "/user_directory/search", {"search_term": term, "limit": 50})
        assert status == 200, body
        return {r["user_id"] for r in body["results"]}


@contextlib.asynccontextmanager
async def _people(guarded: Guarded) -> AsyncIterator[Callable[[str], Awaitable[Person]]]:
    async with aiohttp.ClientSession() as http:
        async def make(name: str) -> Person:
            localpart, password = f"{name}_{secrets.token_hex(3)}", secrets.token_urlsafe(12)
            guarded.synapse.register_user(localpart, password)
            async with http.post(f"{guarded.synapse.url}/_matrix/client/v3/login", json={
                    "type": "m.login.password", "identifier": {"type": "m.id.user", "user": localpart},
                    "password": password}) as resp:
                body = await resp.json()
            return Person(http, guarded.synapse.url, body["user_id"], body["access_token"])

        yield make


@pytest_asyncio.fixture
async def people(guarded: Guarded) -> AsyncIterator[Callable[[str], Awaitable[Person]]]:
    async with _people(guarded) as make:
        yield make


async def until(check: Callable[[], Awaitable[bool]], *, timeout: float = 120.0) -> None:
    """Poll a condition; `timeout` only turns a hang into a failure."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.2)


async def _school(guarded: Guarded, tmp_path: Path, people: Callable[[str], Awaitable[Person]],
                  policies: Path | None = None, surnames: dict[str, str] | None = None,
                  ) -> tuple[dict[str, Person], Config, str, dict[str, str]]:
    """surnames: person id -> a family name other than the fixture's."""
    names = {"t-cp": "claire", "t-ce1": "marc", "g-anne": "anne", "g-paul": "paul", "g-sara": "sara"}
    who = {pid: await people(name) for pid, name in names.items()}
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(yaml.safe_dump({pid: p.user_id for pid, p in who.items()}))
    base = guarded.config
    config = dataclasses.replace(base, database_url=f"sqlite:///{tmp_path / 'bridge.db'}",
                                 bot=dataclasses.replace(base.bot, store_dir=tmp_path / "nio"),
                                 audit_head_file=tmp_path / "audit-head", policies_dir=policies or base.policies_dir,
                                 identity=dataclasses.replace(base.identity, mapping_file=mapping))
    data = unique_school(tmp_path)
    for person in data["guardians"] + data["staff"]:
        person["last_name"] = (surnames or {}).get(person["id"], person["last_name"])
    school = str(write_school(tmp_path, data))
    bridge = await Bridge.create(config, with_bot=False)
    try:
        result = await run_sync(config, [school], store=bridge.store, api=bridge.api, apply=True)
        assert not result.report or not result.report.failed
        rooms = {r.room_key: r.room_id for r in await bridge.store.all_rooms()}
    finally:
        await bridge.api.close()
        await bridge.store.close()
    by_name = {names[pid]: p for pid, p in who.items()}
    return by_name, config, school, rooms


@pytest.mark.asyncio
async def test_a_parent_finds_and_reaches_only_the_staff_of_their_children(
        guarded: Guarded, tmp_path: Path, people: Callable[[str], Awaitable[Person]]) -> None:
    p, _, _, _ = await _school(guarded, tmp_path, people)
    sara, anne, paul, marc, claire = p["sara"], p["anne"], p["paul"], p["marc"], p["claire"]
    # Positive controls first: the directory answers, and the module lets linked people through.
    await until(lambda: _finds(anne, paul))
    await until(lambda: _finds(sara, marc))
    for other in (anne, paul, claire):  # another family; a teacher of another class
        assert not await _finds(sara, other)
    for other in (claire, marc):
        assert await _finds(anne, other)
    assert not await _finds(claire, sara)  # Claire doesn't teach Inès
    assert await _finds(marc, sara)  # the director reaches every family of the school
    # DMs: a parent opens one with their child's teacher, never with another parent.
    status, body = await sara.call("POST", "/createRoom", {"invite": [anne.user_id], "is_direct": True,
                                                            "preset": "trusted_private_chat"})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN" and "annuaire" in body["error"], body
    status, body = await sara.call("POST", "/createRoom", {"invite": [marc.user_id], "is_direct": True,
                                                            "preset": "trusted_private_chat"})
    assert status == 200, body
    status, body = await sara.call("POST", "/createRoom", {"preset": "private_chat"})
    assert status == 200, body
    status, refused = await sara.call("POST", f"/rooms/{body['room_id']}/invite", {"user_id": anne.user_id})
    assert status == 403 and "annuaire" in refused["error"], refused
    status, body = await sara.call("POST", "/createRoom", {"preset": "public_chat", "visibility": "public"})
    assert status == 403 and "publics" in body["error"], body


async def _join(room_id: str, *people: Person) -> None:
    for person in people:
        status, body = await person.call("POST", f"/rooms/{room_id}/join", {})
        assert status == 200, body


async def _finds(searcher: Person, target: Person) -> bool:
    return target.user_id in await searcher.search(target.user_id.split(":")[0][1:])


@pytest.mark.asyncio
async def test_managed_rooms_take_only_entitled_people_and_keep_their_template(
        guarded: Guarded, tmp_path: Path, people: Callable[[str], Awaitable[Person]]) -> None:
    p, _, _, rooms = await _school(guarded, tmp_path, people)
    claire, paul, sara = p["claire"], p["paul"], p["sara"]
    outsider = await people("mallory")
    cp = next(rid for key, rid in rooms.items() if key.startswith("class:") and ":CP:" in key)
    await _join(cp, claire, paul)
    # A teacher (a moderator of the room) invites someone the directory doesn't put there.
    for stranger in (outsider, sara):
        status, body = await claire.call("POST", f"/rooms/{cp}/invite", {"user_id": stranger.user_id})
        assert status == 403 and "réservé" in body["error"], body
    # ... but may bring back an entitled parent who left.
    status, _ = await paul.call("POST", f"/rooms/{cp}/leave", {})
    assert status == 200
    status, body = await claire.call("POST", f"/rooms/{cp}/invite", {"user_id": paul.user_id})
    assert status == 200, body
    status, body = await outsider.call("POST", f"/rooms/{cp}/join", {})
    assert status == 403 and "réservé" in body["error"], body
    # State a moderator may send by power level, which would break the template: refused.
    status, body = await claire.call("PUT", f"/rooms/{cp}/state/im.vector.modular.widgets/w1",
                                     {"type": "m.custom", "url": "https://evil.example/", "name": "x"})
    assert status == 403 and "widgets" in body["error"], body
    status, body = await claire.call("PUT", f"/rooms/{cp}/state/m.room.name/", {"name": "CP 2026"})
    assert status == 200, body
    # Nobody but the bridge marks a room as one it manages.
    status, body = await claire.call("POST", "/createRoom", {"initial_state": [
        {"type": "fr.ent-bridge.room", "state_key": "", "content": {"template": "class"}}]})
    assert status == 403, body


@pytest.mark.asyncio
async def test_a_director_cannot_open_a_managed_room(
        guarded: Guarded, tmp_path: Path, people: Callable[[str], Awaitable[Person]]) -> None:
    """The school room makes the director its admin (power 100): Synapse's own rules let them
    change anything; the module still refuses what breaks the template."""
    p, _, _, rooms = await _school(guarded, tmp_path, people)
    marc = p["marc"]
    school = next(rid for key, rid in rooms.items() if key.startswith("school:"))
    status, body = await marc.call("POST", f"/rooms/{school}/join", {})
    assert status == 200, body
    status, levels = await marc.call("GET", f"/rooms/{school}/state/m.room.power_levels/")
    assert levels["users"].get(marc.user_id) == 100, levels
    for etype, content in (("m.room.join_rules", {"join_rule": "public"}),
                           ("m.room.history_visibility", {"history_visibility": "world_readable"}),
                           ("m.room.guest_access", {"guest_access": "can_join"}),
                           ("m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2", "rotation_period_ms": 1}),
                           ("m.room.power_levels", {**levels, "users": {**levels["users"], p["sara"].user_id: 100}})):
        status, body = await marc.call("PUT", f"/rooms/{school}/state/{etype}/", content)
        assert status == 403 and "ENT" in body["error"], (etype, body)
    status, rule = await marc.call("GET", f"/rooms/{school}/state/m.room.join_rules/")
    assert rule["join_rule"] == "invite"


@pytest.mark.asyncio
async def test_relations_follow_the_next_sync_without_restarting_synapse(
        guarded: Guarded, tmp_path: Path, people: Callable[[str], Awaitable[Person]]) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", policies)
    p, config, school, _ = await _school(guarded, tmp_path, people, policies)
    sara, anne, marc, claire = p["sara"], p["anne"], p["marc"], p["claire"]
    await until(lambda: _finds(sara, marc))
    assert not await _finds(sara, anne) and not await _finds(sara, claire)

    async def sync() -> None:
        bridge = await Bridge.create(config, with_bot=False)
        try:
            result = await run_sync(config, [school], store=bridge.store, api=bridge.api, apply=True)
            assert result.verdict.ok, result.verdict.reasons
        finally:
            await bridge.api.close()
            await bridge.store.close()

    # Claire moves to CE1 (Inès's class): Sara finds her once the module re-read the snapshot.
    data = yaml.safe_load(Path(school).read_text())
    next(t for t in data["staff"] if t["id"] == "t-cp")["classes"] = ["CE1"]
    Path(school).write_text(yaml.safe_dump(data, allow_unicode=True))
    await sync()
    await until(lambda: _finds(sara, claire))  # re-read every 0.5 s here, 10 s by default
    # The access policy is read by the sync too: elected parent representatives' deployment.
    (policies / "access.yaml").write_text("access:\n  guardians_reach_guardians: true\n")
    await sync()
    await until(lambda: _finds(sara, anne))


@pytest.mark.asyncio
async def test_no_parent_reads_another_familys_room_id_from_the_space(
        guarded: Guarded, tmp_path: Path, people: Callable[[str], Awaitable[Person]]) -> None:
    p, _, _, rooms = await _school(guarded, tmp_path, people)
    sara = p["sara"]
    space = next(rid for key, rid in rooms.items() if key.startswith("space:"))
    families = {rid for key, rid in rooms.items() if key.startswith("family:")}
    own = next(rid for key, rid in rooms.items() if key.startswith("family:") and key.endswith("p-ines"))
    for room in (space, own):
        status, body = await sara.call("POST", f"/rooms/{room}/join", {})
        assert status == 200, body
    status, state = await sara.call("GET", f"/rooms/{space}/state")
    assert status == 200
    children = {e["state_key"] for e in state if e["type"] == "m.space.child" and e["content"].get("via")}
    assert children and not children & families  # classes and school rooms are listed; no family room
    status, hierarchy = await sara.call("GET", f"/rooms/{space}/hierarchy", version="v1")
    assert status == 200 and not {r["room_id"] for r in hierarchy["rooms"]} & families
    # Her own family room names the Space itself, for clients to show it there.
    status, parent = await sara.call("GET", f"/rooms/{own}/state/m.space.parent/{space}")
    assert status == 200 and parent.get("canonical") is True, parent


@pytest.mark.asyncio
async def test_the_homeserver_refuses_a_posing_or_insulting_name_before_anyone_sees_it(
        guarded: Guarded, tmp_path: Path, people: Callable[[str], Awaitable[Person]]) -> None:
    """The bridge takes such a name back once it is shown; the module refuses it up front, so a
    muted parent can't rename again and again, and a global name stays out of the rooms and out
    of the user directory."""
    p, _, _, rooms = await _school(guarded, tmp_path, people)
    anne, paul, claire = p["anne"], p["paul"], p["claire"]
    cp = next(rid for key, rid in rooms.items() if key.startswith("class:") and ":CP:" in key)
    await _join(cp, anne, claire)
    own = f"/rooms/{cp}/state/m.room.member/{anne.user_id}"
    status, teacher = await anne.call("GET", f"/rooms/{cp}/state/m.room.member/{claire.user_id}")
    assert status == 200 and teacher["displayname"], teacher
    # A title, an insult, the teacher's own name (shouted).
    for name in ("Mme la Directrice", "c0nnard", teacher["displayname"].upper()):
        status, body = await anne.call("PUT", own, {"membership": "join", "displayname": name})
        assert status == 403 and "charte" in body["error"] and name not in body["error"], (name, body)
    status, body = await anne.call("PUT", own, {"membership": "join", "displayname": "Maman de Lina"})
    assert status == 200, body  # an ordinary name goes through
    # The teacher calls herself by her title: staff are not held to the names rule.
    status, body = await claire.call("PUT", f"/rooms/{cp}/state/m.room.member/{claire.user_id}",
                                     {"membership": "join", "displayname": "Maîtresse Claire"})
    assert status == 200, body
    # A global rename to an insult: the profile takes it (it is no room's), the rooms don't, and
    # a search that found Anne no longer shows her.
    await until(lambda: _finds(claire, anne))
    status, body = await anne.call("PUT", f"/profile/{anne.user_id}/displayname", {"displayname": "sale c0nnard"})
    assert status == 200, body
    status, shown = await anne.call("GET", own)
    assert status == 200 and shown.get("displayname") == "Maman de Lina", shown
    await until(lambda: _not(_finds(claire, anne)))
    # Accepting an invitation under a posing global name: Paul joins, without the name.
    status, body = await paul.call("PUT", f"/profile/{paul.user_id}/displayname", {"displayname": "Le Directeur"})
    assert status == 200, body
    status, body = await paul.call("POST", f"/rooms/{cp}/join", {})
    assert status == 200, body
    status, joined = await paul.call("GET", f"/rooms/{cp}/state/m.room.member/{paul.user_id}")
    assert status == 200 and joined["membership"] == "join" and "displayname" not in joined, joined
    # Leaving with an insult as the reason: left, and the reason is not in the room.
    status, body = await paul.call("POST", f"/rooms/{cp}/leave", {"reason": "bande de connards"})
    assert status == 200, body
    status, left = await claire.call("GET", f"/rooms/{cp}/state/m.room.member/{paul.user_id}")
    assert status == 200 and left == {"membership": "leave"}, left


@pytest.mark.asyncio
async def test_a_parent_whose_family_name_is_a_title_shows_it_and_is_found(
        guarded: Guarded, tmp_path: Path, people: Callable[[str], Awaitable[Person]]) -> None:
    """Sara's family name is Maître (the names rule's "maître"): the name the directory gives her
    is hers, in the room and in the user directory; a title added to it is still refused."""
    p, _, _, rooms = await _school(guarded, tmp_path, people, surnames={"g-sara": "Maître"})
    sara, marc, anne = p["sara"], p["marc"], p["anne"]
    ce1 = next(rid for key, rid in rooms.items() if key.startswith("class:") and ":CE1:" in key)
    await _join(ce1, sara, anne)
    own = f"/rooms/{ce1}/state/m.room.member/{sara.user_id}"
    status, body = await sara.call("PUT", own, {"membership": "join", "displayname": "Sara MAÎTRE"})
    assert status == 200, body
    status, body = await sara.call("PUT", own, {"membership": "join", "displayname": "Sara Maître, directrice"})
    assert status == 403 and "charte" in body["error"], body
    # Anne showing Sara's name poses as nobody she is: refused (the rule reads it as a title).
    status, body = await anne.call("PUT", f"/rooms/{ce1}/state/m.room.member/{anne.user_id}",
                                   {"membership": "join", "displayname": "Sara Maître"})
    assert status == 403, body
    status, body = await sara.call("PUT", f"/profile/{sara.user_id}/displayname", {"displayname": "Sara Maître"})
    assert status == 200, body
    await until(lambda: _finds(marc, sara))

    async def shown_in_room() -> bool:
        status, shown = await anne.call("GET", own)
        assert status == 200, shown
        return bool(shown.get("displayname") == "Sara Maître")

    await until(shown_in_room)  # the profile's name reaches the room too


async def _not(check: Awaitable[bool]) -> bool:
    return not await check


@pytest.mark.asyncio
async def test_the_homeservers_refusals_reach_the_bridges_audit_even_those_made_while_it_was_down(
        reporting: Guarded, tmp_path: Path) -> None:
    """What the module refuses is in the bridge's HMAC audit (it was only in Synapse's log): an
    invite refused while the bridge is down arrives once it is up, though Synapse was killed
    (SIGKILL) and restarted meanwhile; a join refused then, at once; people are named by their
    pseudonyms, the chain verifies."""
    from bridge.audit import for_config

    async with _people(reporting) as people:
        p, config, _, rooms = await _school(reporting, tmp_path, people)
        sara, anne = p["sara"], p["anne"]
        status, body = await sara.call("POST", "/createRoom", {"preset": "private_chat"})
        assert status == 200, body
        status, refused = await sara.call("POST", f"/rooms/{body['room_id']}/invite", {"user_id": anne.user_id})
        assert status == 403, refused  # the bridge is not running: the refusal waits in the module
        synapse = reporting.synapse
        assert synapse.process is not None
        os.kill(synapse.process.pid, signal.SIGKILL)  # Synapse dies with it waiting: its spool keeps it
        synapse.process.wait()
        synapse.process = None
        synapse.start()
        bridge = await Bridge.create(config, with_bot=False)
        await bridge.start()
        try:
            audit = for_config(config, bridge.store)

            async def refused_kinds() -> set[str]:
                rows = [json.loads(r.body) for r in await bridge.store.audit_rows()]
                return {r["action"] for r in rows if r["action"].startswith("access_refused_")}

            await until(lambda: _has(refused_kinds(), "access_refused_invite"))
            cp = next(rid for key, rid in rooms.items() if key.startswith("class:") and ":CP:" in key)
            status, body = await sara.call("POST", f"/rooms/{cp}/join", {})  # not her child's class
            assert status == 403, body
            await until(lambda: _has(refused_kinds(), "access_refused_join"))
            rows = [json.loads(r.body) for r in await bridge.store.audit_rows()]
            invite = next(r for r in rows if r["action"] == "access_refused_invite")
            join = next(r for r in rows if r["action"] == "access_refused_join")
            assert invite["subject"] == audit.pseudonym(sara.user_id) == join["subject"]
            assert invite["detail"] == {"target": audit.pseudonym(anne.user_id)} and join["room"] == cp
            assert invite["actor"] == "synapse-module" and "annuaire" in invite["reason"]
            assert not any(person.user_id in r.body for r in await bridge.store.audit_rows()
                           for person in (sara, anne))
            assert (await audit.verify()).ok
        finally:
            await bridge.stop()


async def _has(kinds: Awaitable[set[str]], kind: str) -> bool:
    return kind in await kinds
