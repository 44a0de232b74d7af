"""Who may reach whom: relations from the directory, the snapshot file, the module's decisions."""

from __future__ import annotations

import dataclasses
import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.access.links import managed_rooms, relations
from bridge.access.rules import MANAGED_STATE, NO_DATA, NOT_ENTITLED, NOT_LINKED, PUBLIC, WIDGET, Rules
from bridge.access.snapshot import AccessSnapshot, write_snapshot
from bridge.access.synapse_module import AccessModule, ModuleConfigError, parse
from bridge.directory.sources import load
from bridge.errors import InputError
from bridge.policy.access import json_schema, load_access
from bridge.policy.model import AccessPolicy
from bridge.rooms.desired import Settings, compute
from bridge.rooms.templates import load_templates

ROOT = Path(__file__).resolve().parent.parent
BRIDGE = frozenset({"@ent-bridge:ent.test", "@ent-bridge_bot:ent.test"})
WHO = {"t-cp": "@claire:ent.test", "t-ce1": "@marc:ent.test", "g-anne": "@anne:ent.test",
       "g-paul": "@paul:ent.test", "g-sara": "@sara:ent.test"}
CLAIRE, MARC, ANNE, PAUL, SARA = WHO.values()
OUTSIDER = "@mallory:ent.test"


DEFAULTS = AccessPolicy()


def snapshot(tmp_path: Path, policy: AccessPolicy = DEFAULTS, *, room_ids: dict[str, str] | None = None
             ) -> tuple[AccessSnapshot, Any]:
    """The school.yaml fixture (Claire teaches CP; Marc CE1 and directs; Anne and Paul are Lina's
    (CP) and Tom's (CE1) parents; Sara is Inès's (CE1), Paul only a contact of Inès)."""
    directory, _ = load([str(ROOT / "tests" / "fixtures" / "school.yaml")])
    from datetime import UTC, datetime

    desired = compute(directory, load_templates(ROOT / "policies"), WHO,
                      settings=Settings(bot_user_id="@ent-bridge_bot:ent.test", key_secret="k" * 32,
                                        alias_prefix="ent-bridge_"), now=datetime(2026, 11, 30, tzinfo=UTC))
    path = tmp_path / "access.sqlite"
    write_snapshot(path, relations(directory, WHO, policy, secret="s" * 32), managed_rooms(desired.rooms),
                   room_ids or {}, generated_ms=1)
    snap = AccessSnapshot(path)
    assert snap.refresh()
    return snap, desired


def test_guardians_reach_their_childrens_staff_only(tmp_path: Path) -> None:
    snap, _ = snapshot(tmp_path)
    rules = Rules(snap, BRIDGE)
    allowed = [(ANNE, CLAIRE), (ANNE, MARC), (SARA, MARC), (ANNE, PAUL), (PAUL, ANNE), (CLAIRE, ANNE),
               (MARC, SARA), (CLAIRE, MARC), (MARC, CLAIRE), (SARA, "@ent-bridge_bot:ent.test")]
    refused = [(SARA, ANNE), (ANNE, SARA), (SARA, PAUL),  # guardians of the same class (CE1)
               (SARA, CLAIRE), (CLAIRE, SARA),  # Claire teaches CP; Inès is in CE1
               (ANNE, OUTSIDER), (OUTSIDER, ANNE), (OUTSIDER, CLAIRE)]
    assert [p for p in allowed if rules.reach(*p) is not None] == []
    assert [p for p in refused if rules.reach(*p) != NOT_LINKED] == []
    assert rules.reach(OUTSIDER, "@other:elsewhere.test") is None  # neither in the directory


def test_policy_switches_and_unrestricted_ids(tmp_path: Path) -> None:
    snap, _ = snapshot(tmp_path, AccessPolicy(guardians_reach=("director",), guardians_reach_guardians=True,
                                              co_guardians_reach=False, unrestricted=("@dane:ent.test",)))
    rules = Rules(snap, BRIDGE)
    assert rules.reach(SARA, ANNE) is None  # parent representatives' deployment
    assert rules.reach(ANNE, CLAIRE) == NOT_LINKED  # teachers are off the guardians' list
    assert rules.reach(ANNE, MARC) is None  # the director stays
    assert rules.reach(ANNE, PAUL) is None  # still guardians of the same classes
    assert rules.reach("@dane:ent.test", SARA) is None and rules.reach(SARA, "@dane:ent.test") is None


def test_no_snapshot_fails_closed(tmp_path: Path) -> None:
    snap = AccessSnapshot(tmp_path / "absent.sqlite")
    assert snap.refresh() is False
    rules = Rules(snap, BRIDGE)
    assert rules.reach(ANNE, CLAIRE) == NO_DATA
    assert rules.join(ANNE, managed=True, ref="x") == NO_DATA
    assert rules.invite(CLAIRE, ANNE, managed=True, ref="x") == NO_DATA
    assert rules.join(ANNE, managed=False, ref=None) is None  # not a room the bridge manages
    assert rules.invite("@ent-bridge_bot:ent.test", ANNE, managed=True, ref=None) is None


def test_managed_rooms_admit_only_entitled_people(tmp_path: Path) -> None:
    snap, desired = snapshot(tmp_path)
    rules = Rules(snap, BRIDGE)
    cp = next(r for k, r in desired.rooms.items() if k.startswith("class:") and ":CP:" in k)
    family_ines = next(r for k, r in desired.rooms.items() if k.startswith("family:") and k.endswith("p-ines"))
    assert rules.join(ANNE, managed=True, ref=cp.alias_localpart) is None
    assert rules.join(SARA, managed=True, ref=cp.alias_localpart) == NOT_ENTITLED
    assert rules.join(PAUL, managed=True, ref=family_ines.alias_localpart) == NOT_ENTITLED  # a contact
    assert rules.invite(CLAIRE, PAUL, managed=True, ref=cp.alias_localpart) is None  # brought back
    assert rules.invite(CLAIRE, OUTSIDER, managed=True, ref=cp.alias_localpart) == NOT_ENTITLED
    assert rules.join(ANNE, managed=True, ref=None) == NO_DATA  # a managed room nobody published


def test_room_creation(tmp_path: Path) -> None:
    snap, _ = snapshot(tmp_path)
    rules = Rules(snap, BRIDGE)
    assert rules.create_room(SARA, {"invite": [MARC], "is_direct": True}) is None
    assert rules.create_room(SARA, {"invite": [ANNE], "is_direct": True}) == NOT_LINKED
    assert rules.create_room(SARA, {"preset": "public_chat"}) == PUBLIC
    assert rules.create_room(CLAIRE, {"initial_state": [{"type": "fr.ent-bridge.room", "content": {}}]}) \
        == MANAGED_STATE
    assert rules.create_room("@ent-bridge_bot:ent.test", {"invite": [SARA, ANNE]}) is None


LEVELS = {"users": {CLAIRE: 50}, "users_default": 0, "events_default": 0, "state_default": 50, "invite": 50}


@pytest.mark.parametrize(("event_type", "content", "refused"), [
    ("m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2", "rotation_period_ms": 1}, MANAGED_STATE),
    ("m.room.join_rules", {"join_rule": "public"}, MANAGED_STATE),
    ("m.room.join_rules", {"join_rule": "knock"}, MANAGED_STATE),
    ("m.room.join_rules", {"join_rule": "invite"}, None),
    ("m.room.history_visibility", {"history_visibility": "world_readable"}, MANAGED_STATE),
    ("m.room.history_visibility", {"history_visibility": "shared"}, MANAGED_STATE),
    ("m.room.history_visibility", {"history_visibility": "joined"}, None),
    ("m.room.history_visibility", {"history_visibility": ["joined"]}, MANAGED_STATE),  # malformed
    ("m.room.guest_access", {"guest_access": "can_join"}, MANAGED_STATE),
    ("im.vector.modular.widgets", {"url": "https://evil.example"}, WIDGET),
    ("m.widget", {"url": "https://evil.example"}, WIDGET),
    ("fr.ent-bridge.room", {"template": "class"}, MANAGED_STATE),
    ("m.room.power_levels", {**LEVELS, "users": {CLAIRE: 50, ANNE: 50}}, MANAGED_STATE),  # power to a parent
    ("m.room.power_levels", {**LEVELS, "users": {CLAIRE: 100}}, MANAGED_STATE),  # more than the template
    ("m.room.power_levels", {**LEVELS, "events_default": 50}, MANAGED_STATE),
    ("m.room.power_levels", {**LEVELS, "users": {CLAIRE: 50, ANNE: -1}}, None),  # a moderator mutes
    ("m.room.name", {"name": "CP"}, None),
])
def test_state_that_breaks_the_template_is_refused(tmp_path: Path, event_type: str, content: dict[str, Any],
                                                   refused: str | None) -> None:
    snap, desired = snapshot(tmp_path)
    cp = next(r for k, r in desired.rooms.items() if k.startswith("class:") and ":CP:" in k)
    rules = Rules(snap, BRIDGE)
    assert rules.state(CLAIRE, event_type, content, managed=True, ref=cp.alias_localpart,
                       previous_power=LEVELS) == refused
    assert rules.state("@ent-bridge_bot:ent.test", event_type, content, managed=True, ref=cp.alias_localpart,
                       previous_power=LEVELS) is None
    # Outside managed rooms people do as they like, but nobody marks a room as the bridge's.
    outside = rules.state(CLAIRE, event_type, content, managed=False, ref=None, previous_power=LEVELS)
    assert outside == (MANAGED_STATE if event_type == "fr.ent-bridge.room" else None)


def test_snapshot_is_replaced_whole_and_picked_up(tmp_path: Path) -> None:
    snap, _ = snapshot(tmp_path)
    assert Rules(snap, BRIDGE).reach(SARA, ANNE) == NOT_LINKED
    assert snap.refresh() is False  # unchanged: not re-opened
    _, desired = snapshot(tmp_path, AccessPolicy(guardians_reach_guardians=True))
    ref = next(iter(desired.rooms.values())).alias_localpart
    again, _ = snapshot(tmp_path, AccessPolicy(guardians_reach_guardians=True),
                        room_ids={"!r:ent.test": ref, "!gone:ent.test": "no-such-room"})
    assert snap.refresh() is True
    assert Rules(snap, BRIDGE).reach(SARA, ANNE) is None
    assert snap.ref_of("!r:ent.test") == ref and snap.ref_of("!gone:ent.test") is None
    assert oct((tmp_path / "access.sqlite").stat().st_mode & 0o777) == "0o640"
    again.close()


class _Api:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def register_spam_checker_callbacks(self, **kw: Any) -> None:
        self.calls += sorted(kw)

    def register_third_party_rules_callbacks(self, **kw: Any) -> None:
        self.calls += sorted(kw)

    def looping_background_call(self, f: Any, msec: float, **kw: Any) -> None:
        self.calls.append(f"every {msec:g} ms on all: {kw.get('run_on_all_instances')}")


def test_module_keeps_the_previous_snapshot_when_the_new_one_is_broken(tmp_path: Path) -> None:
    snapshot(tmp_path)
    api = _Api()
    module = AccessModule(parse({"snapshot": str(tmp_path / "access.sqlite"), "bridge_users": sorted(BRIDGE),
                                 "refresh_seconds": 1}), api)
    assert "check_username_for_spam" in api.calls and "check_event_allowed" in api.calls
    assert "every 1000 ms on all: True" in api.calls
    assert module.rules.reach(ANNE, CLAIRE) is None
    (tmp_path / "broken").write_bytes(b"not a database" * 100)
    (tmp_path / "broken").replace(tmp_path / "access.sqlite")
    module._refresh()  # logged, and the rules loaded before stay in force
    assert module.rules.reach(ANNE, CLAIRE) is None and module.rules.reach(SARA, ANNE) == NOT_LINKED


@pytest.mark.parametrize(("config", "message"), [
    ({"snapshot": "/x", "bridge_users": ["@a:b"], "refresh": 1}, "unknown key(s) refresh"),
    ({"bridge_users": ["@a:b"]}, "snapshot:"),
    ({"snapshot": "/x", "bridge_users": []}, "bridge_users:"),
    ({"snapshot": "/x", "bridge_users": ["@a:b"], "refresh_seconds": 3600}, "refresh_seconds:"),
])
def test_module_config_errors(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ModuleConfigError, match=re.escape(message)):
        parse(config)


def test_access_policy_errors_name_line_and_column(tmp_path: Path) -> None:
    (tmp_path / "access.yaml").write_text("access:\n  guardians_reach: [teachers, parents]\n")
    with pytest.raises(InputError, match=r"access.yaml.*2.*unknown parents"):
        load_access(tmp_path)
    (tmp_path / "access.yaml").write_text("access:\n  guardian_reach: [teachers]\n")
    with pytest.raises(InputError, match=r"2.*unknown key 'guardian_reach'"):
        load_access(tmp_path)
    (tmp_path / "access.yaml").write_text("access:\n  unrestricted: [admin]\n")
    with pytest.raises(InputError, match="not Matrix ids: admin"):
        load_access(tmp_path)


def test_shipped_access_policy_and_its_schema() -> None:
    policy = load_access(ROOT / "policies")
    assert policy == AccessPolicy()  # the file spells out the defaults
    schema = json_schema()["properties"]["access"]["properties"]
    assert set(schema) == {f.name for f in dataclasses.fields(AccessPolicy)}
    shipped = yaml.safe_load((ROOT / "policies" / "access.yaml").read_text())["access"]
    assert set(shipped) == set(schema)
    # The schema editors use is the one the loader derives (regenerate: `policy schema --access`).
    assert json.loads((ROOT / "policies" / "schema" / "access.schema.json").read_text()) == json_schema()
    assert "$schema=schema/access.schema.json" in (ROOT / "policies" / "access.yaml").read_text().splitlines()[0]


def test_snapshot_holds_no_pupil_data(tmp_path: Path) -> None:
    snapshot(tmp_path)
    db = sqlite3.connect(tmp_path / "access.sqlite")
    dump = "\n".join(db.iterdump())
    for secret in ("p-lina", "p-ines", "Lina", "Inès", "Martin", "0750003C"):
        assert secret not in dump
