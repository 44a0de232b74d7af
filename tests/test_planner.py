"""Pure planner, guards and desired state: table-driven, no homeserver."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bridge.directory.importers.plain import import_yaml
from bridge.reconcile import actions as A
from bridge.reconcile import guards, planner
from bridge.reconcile.inputs import persons
from bridge.reconcile.observed import ObservedRoom, ObservedState
from bridge.reconcile.planner import plan
from bridge.rooms.desired import Settings, compute, school_year
from bridge.rooms.identity import IdentityRules, Person, localpart, map_identities
from bridge.rooms.templates import load_templates

ROOT = Path(__file__).resolve().parent.parent
BOT = "@ent-bridge_bot:ent.test"
NOW = datetime(2026, 11, 29, tzinfo=UTC)
SETTINGS = Settings(bot_user_id=BOT, key_secret="k" * 32, alias_prefix="ent-bridge_")


def desired():
    d = import_yaml(Path(__file__).parent / "fixtures" / "school.yaml")
    ids = map_identities(persons(d), rules=IdentityRules(server_name="ent.test"), known={}, by_email={})
    return compute(d, load_templates(ROOT / "policies"), ids, settings=SETTINGS, now=NOW)


def observed_from(ds, **overrides):
    """An observed state equal to the desired one (as after a perfect apply), then altered."""
    rooms = {}
    for key, r in ds.rooms.items():
        members = {m: "join" for m in r.members} | {BOT: "join"}
        rooms[key] = ObservedRoom(key, f"!{abs(hash(key))}:ent.test", members, dict(r.power_levels), r.name, r.topic,
                                  frozenset(f"!{abs(hash(k))}:ent.test" for k, c in ds.rooms.items()
                                            if c.space_key == key and c.space_listed), retention_ms=r.retention_ms,
                                  encryption="m.megolm.v1.aes-sha2" if r.encrypted else None, join_rule="invite",
                                  history_visibility=r.history_visibility, guest_access="forbidden",
                                  parents=frozenset({f"!{abs(hash(r.space_key))}:ent.test"} if r.space_key and
                                                    not r.space_listed else ()))
    rooms.update(overrides)
    return ObservedState(rooms)


def test_fresh_plan_creates_everything_in_order() -> None:
    ds = desired()
    p = plan(ds, ObservedState(), bot=BOT)
    types = [a.kind for a in p.actions]
    assert types[0] == "create_space" and types.index("invite") > types.index("create_room")
    assert types[-1] == "add_to_space"
    assert p.summary()["create_room"] == len(ds.rooms) - 1
    assert p == plan(ds, ObservedState(), bot=BOT)  # deterministic


def test_converged_state_plans_nothing() -> None:
    ds = desired()
    assert plan(ds, observed_from(ds), bot=BOT).is_empty()


def test_family_rooms_are_not_listed_by_the_school_space() -> None:
    """Every parent of the school reads the Space's child list: a family room names its Space
    itself (m.space.parent, read by its own members only) and the Space doesn't list it."""
    ds = desired()
    fresh = plan(ds, ObservedState(), bot=BOT)
    families = {k for k in ds.rooms if k.startswith("family:")}
    assert families and {a.child_key for a in fresh.actions if isinstance(a, A.AddToSpace)} & families == set()
    assert {a.room_key for a in fresh.actions if isinstance(a, A.LinkToSpace)} == families
    # A Space made before this rule lists them: they are taken off its list, and linked the other way.
    before = observed_from(ds)
    space_key = next(k for k in ds.rooms if k.startswith("space:"))
    family_ids = {before.rooms[k].room_id for k in families}
    space = before.rooms[space_key]
    old = observed_from(ds, **{space_key: dataclasses.replace(space, children=space.children | family_ids)},
                        **{k: dataclasses.replace(before.rooms[k], parents=frozenset()) for k in families})
    mend = plan(ds, old, bot=BOT)
    assert {a.child_id for a in mend.actions if isinstance(a, A.UnlistFromSpace)} == family_ids
    assert {a.room_key for a in mend.actions if isinstance(a, A.LinkToSpace)} == families
    assert {a.kind for a in mend.actions} == {"unlist_from_space", "link_to_space"}


@pytest.mark.parametrize("membership, expect", [
    ("join", ["kick"]), ("invite", ["kick"]), ("leave", []), ("ban", []),
])
def test_outsider_memberships(membership: str, expect: list[str]) -> None:
    ds = desired()
    key = next(k for k in ds.rooms if k.startswith("class:"))
    o = observed_from(ds)
    room = o.rooms[key]
    altered = dataclasses.replace(room, members={**room.members, "@intrus:ent.test": membership})
    p = plan(ds, observed_from(ds, **{key: altered}), bot=BOT)
    assert [a.kind for a in p.actions] == expect


def test_entitled_but_banned_is_a_note_not_an_invite() -> None:
    ds = desired()
    key = next(k for k in ds.rooms if k.startswith("family:"))
    room = observed_from(ds).rooms[key]
    who = sorted(ds.rooms[key].members)[0]
    altered = dataclasses.replace(room, members={**room.members, who: "ban"})
    p = plan(ds, observed_from(ds, **{key: altered}), bot=BOT)
    assert p.is_empty() and any("banned" in n for n in p.notes)


def test_power_level_drift_is_repaired_and_bot_entry_ignored() -> None:
    ds = desired()
    key = next(k for k in ds.rooms if k.startswith("class:"))
    room = observed_from(ds).rooms[key]
    older_room = {**room.power_levels, "users": {**room.power_levels["users"], BOT: 100}}
    assert plan(ds, observed_from(ds, **{key: dataclasses.replace(room, power_levels=older_room)}),
                bot=BOT).is_empty()
    hacked = {**room.power_levels, "users": {**room.power_levels["users"], "@x:ent.test": 100}}
    p = plan(ds, observed_from(ds, **{key: dataclasses.replace(room, power_levels=hacked)}), bot=BOT)
    [change] = p.actions
    assert isinstance(change, A.SetPowerLevels) and change.keys == ("users",)
    assert change.before["users"]["@x:ent.test"] == 100 and "@x:ent.test" not in change.after["users"]


def test_rooms_not_desired_are_archived_then_emptied_after_grace() -> None:
    ds = desired()
    gone = ObservedRoom("class:0750003C:CM2:2025-2026", "!old:ent.test", {"@a:ent.test": "join", BOT: "join"}, {})
    p = plan(ds, observed_from(ds, **{gone.key: gone}), bot=BOT)
    [archive] = p.actions  # read-only, nobody kicked
    assert isinstance(archive, A.ArchiveRoom) and archive.power_after["events_default"] == 100
    assert archive.name_after.startswith("[Archivé] ") and "30 jours" in archive.topic_after
    in_grace = dataclasses.replace(gone, archived=True)
    assert plan(ds, observed_from(ds, **{gone.key: in_grace}), bot=BOT).is_empty()
    over = dataclasses.replace(gone, archived=True, grace_over=True)
    p = plan(ds, observed_from(ds, **{gone.key: over}), bot=BOT)
    assert p.actions == (A.Kick(gone.key, "@a:ent.test", planner.REASONS["fr"]["grace_over"], "join",
                                announced=True),)
    assert p.removals == 0  # announced removals don't trip the mass-removal guard


def test_archived_room_wanted_again_is_reopened() -> None:
    """A class emptied (archived), then refilled: its room is restored, not left read-only with
    last members inside while the new ones wait outside."""
    ds = desired()
    key = next(k for k in ds.rooms if k.startswith("class:") and ":CP:" in k)
    d = ds.rooms[key]
    archived = ObservedRoom(key, "!cp:ent.test", {"@old:ent.test": "join", BOT: "join"},
                            {**d.power_levels, "events_default": 100}, "[Archivé] " + d.name,
                            "Salon archivé : lecture seule.", archived=True, retention_ms=d.retention_ms,
                            encryption="m.megolm.v1.aes-sha2", join_rule="invite", history_visibility="joined",
                            guest_access="forbidden")
    p = plan(ds, observed_from(ds, **{key: archived}), bot=BOT)
    kinds = [(a.kind, A.subject(a)) for a in p.actions]
    assert ("unarchive_room", None) == kinds[-1]  # marked active last, once restored
    assert ("kick", "@old:ent.test") in kinds and all(("invite", m) in kinds for m in d.members)
    assert {a.event_type for a in p.of(A.SetState)} == {"m.room.name", "m.room.topic"}
    [name] = [a for a in p.of(A.SetState) if a.event_type == "m.room.name"]
    assert (name.before, name.after) == ({"name": "[Archivé] " + d.name}, {"name": d.name})
    assert p.of(A.SetPowerLevels)


def test_desired_contents() -> None:
    ds = desired()
    fam = next(r for k, r in ds.rooms.items() if "p-ines" in k)
    assert fam.name == "Suivi de Inès H. · CE1"  # first name + initial only
    assert fam.members == {"@sara.haddad:ent.test", "@marc.petit:ent.test"}  # contact Paul is not there
    assert "Haddad" not in fam.alias_localpart and fam.alias_localpart.startswith("ent-bridge_")
    assert all(r.encrypted for r in ds.rooms.values() if not r.is_space)
    school = next(r for k, r in ds.rooms.items() if k.startswith("school:"))
    assert school.power_levels["events_default"] == 50  # guardians read-only
    assert school.power_levels["users"]["@marc.petit:ent.test"] == 100  # director
    assert BOT not in school.power_levels["users"]
    space = ds.rooms["space:0750003C"]
    assert space.is_space and space.members == frozenset().union(*(r.members for r in ds.rooms.values()
                                                                    if not r.is_space))
    assert school_year(datetime(2027, 7, 31)) == "2026-2027" and school_year(datetime(2027, 8, 1)) == "2027-2028"


def test_identity_mapping_stable_homonyms_and_known() -> None:
    rules = IdentityRules(server_name="s")
    people = [Person("b", "Léa", "Martin"), Person("a", "Lea", "MARTIN"), Person("c", "Zoé", "N'Diaye")]
    ids = map_identities(people, rules=rules, known={}, by_email={})
    assert ids["a"] == "@lea.martin:s" and ids["b"].startswith("@lea.martin.") and ids["b"] != ids["a"]
    assert ids == map_identities(list(reversed(people)), rules=rules, known={}, by_email={})
    assert ids["c"] == "@zoe.n-diaye:s"
    # A person keeps the id given before, even if a new homonym sorts first.
    again = map_identities([Person("0", "Léa", "Martin"), *people], rules=rules, known=ids, by_email={})
    assert {k: again[k] for k in ids} == ids and again["0"] not in ids.values()
    assert localpart("{first}.{last}", Person("x", "ent-bridge_", "bot")).startswith("ent-bridge")


@pytest.mark.parametrize("removals, current, prev, size, ok", [
    (5, 20, None, 100, True),      # small school: below the floor of the share rule
    (11, 100, None, 100, False),   # 11 % of members
    (201, 100000, None, 100, False),  # absolute limit
    (0, 100, 1000, 850, False),    # directory shrank by 15 %
    (0, 100, 1000, 950, True),
])
def test_guards(removals: int, current: int, prev: int | None, size: int, ok: bool) -> None:
    p = A.Plan(tuple(A.Kick("k", f"@u{i}:s", "r") for i in range(removals)), {})
    o = ObservedState({"k": ObservedRoom("k", "!r", {f"@m{i}:s": "join" for i in range(current)}, {})})
    verdict = guards.check(p, o, limits=guards.Limits(), directory_size=size, previous_directory_size=prev)
    assert verdict.ok is ok
    if not ok:
        assert guards.check(p, o, limits=guards.Limits(), directory_size=size, previous_directory_size=prev,
                            allow_mass_removal=True).ok


def test_retention_drift_is_repaired() -> None:
    ds = desired()
    key = next(k for k in ds.rooms if k.startswith("family:"))
    assert ds.rooms[key].retention_ms == 180 * 86_400_000
    room = observed_from(ds).rooms[key]
    p = plan(ds, observed_from(ds, **{key: dataclasses.replace(room, retention_ms=None)}), bot=BOT)
    assert [(a.kind, a.event_type, a.before, a.after) for a in p.of(A.SetState)] == [
        ("set_state", "m.room.retention", None, {"max_lifetime": 180 * 86_400_000})]
    assert len(p.actions) == 1


def test_people_who_left_themselves_are_not_reinvited() -> None:
    ds = desired()
    key = next(k for k in ds.rooms if k.startswith("class:"))
    room = observed_from(ds).rooms[key]
    who = sorted(ds.rooms[key].members)[0]
    kicked = dataclasses.replace(room, members={**room.members, who: "leave"})
    assert plan(ds, observed_from(ds, **{key: kicked}), bot=BOT).actions == (
        A.Invite(key, who, planner.REASONS["fr"]["entitled"], "leave"),)  # removed by someone else: invited back
    chose = dataclasses.replace(kicked, left_by_choice=frozenset({who}))
    p = plan(ds, observed_from(ds, **{key: chose}), bot=BOT)
    assert p.is_empty() and any("left or declined" in n for n in p.notes)


def test_creator_power_by_room_version() -> None:
    from bridge.reconcile.requests import creators_privileged

    assert creators_privileged("12") and creators_privileged("org.matrix.hydra.11")
    assert not creators_privileged("11") and not creators_privileged("1")


KEYLESS = "@ent-bridge_keyless:ent.test"


def test_rooms_without_content_inspection_are_run_by_the_keyless_user() -> None:
    """The family template forgoes content inspection: the keyless user (no device, so no room
    key) creates and runs those rooms, the bot is never in them; other rooms are unchanged."""
    d = import_yaml(Path(__file__).parent / "fixtures" / "school.yaml")
    ids = map_identities(persons(d), rules=IdentityRules(server_name="ent.test"), known={}, by_email={})
    settings = dataclasses.replace(SETTINGS, keyless_user_id=KEYLESS, keyless_templates=frozenset({"family"}))
    ds = compute(d, load_templates(ROOT / "policies"), ids, settings=settings, now=NOW)
    family = {k for k, r in ds.rooms.items() if r.template == "family"}
    assert family and all(ds.rooms[k].owner == KEYLESS for k in family)
    assert all(r.owner is None for k, r in ds.rooms.items() if k not in family)
    assert all(KEYLESS not in r.members and BOT not in r.members for r in ds.rooms.values())
    fresh = plan(ds, ObservedState(), bot=BOT, keyless=KEYLESS)
    assert dict(fresh.actors) == {k: KEYLESS for k in family}
    # Converged: the keyless user holds the family rooms, the bot the others.
    obs = observed_from(ds)
    rooms = dict(obs.rooms)
    for k in family:
        o = rooms[k]
        rooms[k] = dataclasses.replace(o, members={**{m: v for m, v in o.members.items() if m != BOT}, KEYLESS: "join"},
                                       power_levels={**o.power_levels,
                                                     "users": {**o.power_levels["users"], KEYLESS: 100}})
    assert plan(ds, ObservedState(rooms), bot=BOT, keyless=KEYLESS).is_empty()
    # A family room still held by the bot (the profile just changed): handed over, the bot leaves.
    key = sorted(family)[0]
    held = dict(rooms)
    held[key] = obs.rooms[key]
    p = plan(ds, ObservedState(held), bot=BOT, keyless=KEYLESS)
    [t] = p.of(A.TransferRoom)
    assert (t.room_key, t.to, t.held_by, t.leaving) == (key, KEYLESS, BOT, (BOT,))
    assert not p.of(A.Kick)  # the bridge's own users are never kicked
    # Half-way (the keyless user joined, the bot not yet gone): the handover is finished.
    both = dict(rooms)
    both[key] = dataclasses.replace(rooms[key], members={**rooms[key].members, BOT: "join"})
    [t] = [a for a in plan(ds, ObservedState(both), bot=BOT, keyless=KEYLESS).actions]
    assert isinstance(t, A.TransferRoom) and t.leaving == (BOT,)


@pytest.mark.parametrize("change, event_type, after", [
    ({"join_rule": "public"}, "m.room.join_rules", {"join_rule": "invite"}),
    ({"history_visibility": "world_readable"}, "m.room.history_visibility", {"history_visibility": "joined"}),
    ({"guest_access": "can_join"}, "m.room.guest_access", {"guest_access": "forbidden"}),
    ({"encryption": None}, "m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"}),
    ({"encryption": "org.example.plaintext"}, "m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"}),
])
def test_security_state_drift_is_repaired(change: dict[str, object], event_type: str,
                                          after: dict[str, str]) -> None:
    """A director (or anyone with power) opens a managed room, or its history, or removes its
    encryption: the next plan puts the template's value back, before any invite."""
    ds = desired()
    key = next(k for k in ds.rooms if k.startswith("class:"))
    room = observed_from(ds).rooms[key]
    p = plan(ds, observed_from(ds, **{key: dataclasses.replace(room, **change)}), bot=BOT)
    [repair] = p.actions
    assert isinstance(repair, A.SetState) and (repair.event_type, repair.after) == (event_type, after)
    field = next(iter(change))
    assert repair.before == (None if change[field] is None else {next(iter(after)): change[field]})


def test_half_created_room_is_repaired_from_any_state() -> None:
    """A homeserver killed inside createRoom left a room with its create event and some invites:
    no encryption, join rule, history, guest access, name or power levels. The plan restores all
    of it, then invites the rest; planning against the repaired room is empty."""
    ds = desired()
    key = next(k for k in ds.rooms if k.startswith("class:"))
    d = ds.rooms[key]
    some = sorted(d.members)[:1]
    half = ObservedRoom(key, "!half:ent.test", {BOT: "join", **{m: "invite" for m in some}}, {},
                        has_power_levels=False)
    p = plan(ds, observed_from(ds, **{key: half}), bot=BOT)
    set_types = {a.event_type for a in p.of(A.SetState)}
    assert {"m.room.encryption", "m.room.join_rules", "m.room.history_visibility", "m.room.guest_access",
            "m.room.name", "m.room.retention"} <= set_types
    [power] = p.of(A.SetPowerLevels)
    assert power.before == {} and power.after == d.power_levels
    assert {a.user_id for a in p.of(A.Invite)} == set(d.members) - set(some)
    kinds = [a.kind for a in p.actions]
    assert kinds.index("set_power_levels") < kinds.index("invite")  # no invite into an unprotected room
    assert max(i for i, k in enumerate(kinds) if k == "set_state") < kinds.index("invite")


def _room(key: str, *members: str) -> ObservedRoom:
    return ObservedRoom(key, f"!{abs(hash(key))}:ent.test", {**{m: "join" for m in members}, BOT: "join"},
                        {"users": {}}, "x", encryption="m.megolm.v1.aes-sha2", join_rule="invite",
                        history_visibility="joined", guest_access="forbidden")


def _verdict(p: A.Plan, o: ObservedState) -> guards.Verdict:
    return guards.check(p, o, limits=guards.Limits(), directory_size=100, previous_directory_size=100)


def test_a_school_missing_from_the_sources_is_refused_by_name() -> None:
    """Syncing one school of two (or the AAF folder without the BE1D one) would archive every
    room of the other school: refused, and the refusal names it."""
    ds = desired()
    other = {k: _room(k, "@p1:ent.test", "@p2:ent.test")
             for k in ("school:0750009Z", "class:0750009Z:CM1:2026-2027", "family:0750009Z:e1")}
    o = observed_from(ds, **other)
    p = plan(ds, o, bot=BOT)
    assert len(p.of(A.ArchiveRoom)) == 3
    verdict = _verdict(p, o)
    assert not verdict.ok and any("0750009Z" in r and "school" in r for r in verdict.reasons)
    assert any("class:0750009Z:CM1" in r for r in verdict.reasons)
    assert p.removals == 6  # archived rooms' members weigh like removals


def test_rollover_archives_last_years_classes_without_tripping_the_guards() -> None:
    """On 1 August every class room of last year is archived and this year's is created for the
    same class and people: nobody loses a class, nothing is refused."""
    ds = desired()
    last_year = {}
    for key, d in ds.rooms.items():
        if key.startswith("class:"):
            old = key.replace("2026-2027", "2025-2026")
            last_year[old] = _room(old, *d.members)
    o = observed_from(ds, **last_year)
    p = plan(ds, o, bot=BOT)
    assert len(p.of(A.ArchiveRoom)) == len(last_year) and p.removals == 0
    assert _verdict(p, o).ok


def test_a_class_that_vanishes_is_refused_unless_overridden() -> None:
    ds = desired()
    gone = _room("class:0750003C:CM2:2026-2027", "@a:ent.test")
    o = observed_from(ds, **{gone.key: gone})
    p = plan(ds, o, bot=BOT)
    verdict = _verdict(p, o)
    assert not verdict.ok and any("class:0750003C:CM2" in r for r in verdict.reasons)
    assert guards.check(p, o, limits=guards.Limits(), directory_size=100, previous_directory_size=100,
                        allow_mass_removal=True).ok
