"""RGPD: the processing record, an export holding exactly the expected data, erasure of a leaver."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.matrix.appservice_api import AppserviceAPI
from bridge.reconcile.sync import run_sync
from bridge.store import open_store
from tests.conftest import config_file, unique_school, write_school

FIX = Path(__file__).parent / "fixtures"


def _cli(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge", "-c", str(cfg), "rgpd", *args],
                          capture_output=True, text=True)


@pytest.mark.synapse
async def test_register_export_erase(homeserver: Any, data_dir: Path, tmp_path: Path) -> None:
    config = homeserver.config(data_dir)
    store = await open_store(config.database_url)
    api = AppserviceAPI(base_url=config.homeserver.url, as_token=config.appservice.as_token)
    directory = unique_school(tmp_path)
    school = str(write_school(tmp_path, directory))
    await run_sync(config, [school], store=store, api=api, apply=True)
    await api.close()
    await store.close()
    cfg = config_file(homeserver, data_dir)

    reg = _cli(cfg, "register")
    assert reg.returncode == 0 and "family : 180 jours" in reg.stdout and "Jamais : date de naissance" in reg.stdout

    out = _cli(cfg, "export", "g-sara", school)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["matrix_id"] == "@sara.haddad:ent.test"
    assert data["directory_data"] == {"kind": "guardian", "first_name": "Sara", "last_name": "Haddad", "email": None,
                                      "legal_guardian_of": [{"first_name": "Inès", "last_name_initial": "H"}]}
    assert {r["kind"] for r in data["rooms"]} == {"class", "family", "school", "space"}
    assert all(r["role"] == "membre" for r in data["rooms"])
    assert {a["action"] for a in data["actions_about_them"]} == {"invite"}
    assert len(data["actions_about_them"]) == 4

    assert _cli(cfg, "erase", "g-sara", school).returncode == 1  # still in the directory: refused
    left = directory
    left["guardians"] = [g for g in left["guardians"] if g["id"] != "g-sara"]
    for p in left["pupils"]:
        p["guardians"] = [g for g in p["guardians"] if g != "g-sara"]
    gone = tmp_path / "left.yaml"
    gone.write_text(yaml.safe_dump(left, allow_unicode=True))
    # Sara left: the next sync takes her out of the rooms that stay, and archives Inès's family
    # room (no legal guardian left), where she keeps reading for the archive's grace period.
    store = await open_store(config.database_url)
    api = AppserviceAPI(base_url=config.homeserver.url, as_token=config.appservice.as_token)
    try:
        # (a tiny school: one person of eight is more than the guards' 10 % shrink)
        result = await run_sync(config, [str(gone)], store=store, api=api, apply=True, allow_mass_removal=True)
        assert result.verdict.ok and result.report is not None and not result.report.failed
        family = next(r for r in await store.all_rooms() if r.template == "family" and r.room_key.endswith("p-ines"))
        assert family.archived
    finally:
        await api.close()
        await store.close()
    out = _cli(cfg, "export", "@sara.haddad:ent.test", str(gone))  # by Matrix id, gone from the directory
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["person_id"] == "g-sara" and data["rooms"] == []  # the directory entitles her to nothing now
    held = [(m["kind"], m["membership"], m["archived"]) for m in data["on_homeserver"]]
    assert ("family", "invite", True) in held, held  # ... but the homeserver still has her there
    assert {a["action"] for a in data["actions_about_them"]} == {"invite", "kick"}

    # What else the running bridge may keep on her: an absence (were she staff), announcements she
    # wrote or confirmed, and a paused school's power levels to put back.
    sara = "@sara.haddad:ent.test"
    store = await open_store(config.database_url)
    try:
        await store.set_value("absences", json.dumps({sara: {"until": "2099-01-01", "message": ""}}))
        await store.set_value("announcements", json.dumps({
            "$other": {"room": "!r:ent.test", "author": "@marc:ent.test", "at": 1, "reminded": False,
                       "confirmed": {sara: 1, "@anne:ent.test": 2}},
            "$hers": {"room": "!r:ent.test", "author": sara, "at": 1, "reminded": False, "confirmed": {}}}))
        await store.set_value("school_pauses", json.dumps({"0750001A": {"level": 50, "at": 1, "rooms": {
            "!r:ent.test": {"users": {sara: 0, "@marc:ent.test": 50}}}}}))
    finally:
        await store.close()
    erased = _cli(cfg, "erase", "@sara.haddad:ent.test", str(gone))
    assert erased.returncode == 0, erased.stderr
    assert "removed from 1 room(s)" in erased.stdout
    api = AppserviceAPI(base_url=config.homeserver.url, as_token=config.appservice.as_token)
    try:
        assert await api.membership(family.room_id, "@sara.haddad:ent.test", as_user=config.bot_user_id) == "leave"
    finally:
        await api.close()
    store = await open_store(config.database_url)
    try:
        assert "g-sara" not in await store.identities()
        last = (await store.audit_rows())[-1].body
        assert "rgpd_erase" in last and "sara" not in last.lower()
    finally:
        await store.close()
    # Nothing in the store names her any more: not her id, not her Matrix id (the audit log has
    # keyed pseudonyms, the rooms' cached state was dropped).
    store = await open_store(config.database_url)
    try:  # the others' data stays
        items = json.loads(await store.get_value("announcements") or "{}")
        assert list(items) == ["$other"] and items["$other"]["confirmed"] == {"@anne:ent.test": 2}
        pauses = json.loads(await store.get_value("school_pauses") or "{}")
        assert pauses["0750001A"]["rooms"]["!r:ent.test"]["users"] == {"@marc:ent.test": 50}
    finally:
        await store.close()
    db = Path(config.database_url[len("sqlite:///"):])
    raw = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))
    assert b"sara.haddad" not in raw and b"g-sara" not in raw
