"""Who may reach whom (pure): the directory's relations as groups of people, and allowed pairs.

A person is in a group with a side: "c:" groups are classes (teachers, guardians of its pupils),
"f:" groups a pupil's legal guardians (co), "s:" groups a school (staff, director, parents of its
pupils). A reaches B when they share a group where (A's side, B's side) is an allowed pair. Group
names are keyed hashes: the snapshot Synapse reads holds Matrix ids and nothing of the pupils.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from bridge.directory.model import Directory
from bridge.policy.model import AccessPolicy
from bridge.rooms.desired import DesiredRoom

TEACHER, GUARDIAN, CO, STAFF, DIRECTOR, PARENT = "teacher", "guardian", "co", "staff", "director", "parent"


@dataclass(frozen=True)
class Relations:
    links: frozenset[tuple[str, str, str]]  # (group, Matrix id, side)
    rules: frozenset[tuple[str, str]]  # (side of who reaches, side of who is reached)
    unrestricted: frozenset[str] = frozenset()  # held to none of the rules


@dataclass(frozen=True)
class ManagedRoom:
    """What the module checks a managed room against: who is entitled, with which power."""

    ref: str  # the room's alias localpart: a keyed hash of its key
    template: str
    history_visibility: str
    members: Mapping[str, int]  # Matrix id -> power level the template gives (0: member)
    families: tuple[frozenset[str], ...] = ()  # each pupil's legal guardians (class and school rooms)


def allowed_pairs(policy: AccessPolicy) -> frozenset[tuple[str, str]]:
    pairs = {(TEACHER, GUARDIAN), (TEACHER, TEACHER), (STAFF, STAFF), (DIRECTOR, PARENT)}
    if "teachers" in policy.guardians_reach:
        pairs.add((GUARDIAN, TEACHER))
    if "director" in policy.guardians_reach:
        pairs.add((PARENT, DIRECTOR))
    if "school_staff" in policy.guardians_reach:
        pairs.add((PARENT, STAFF))
    if policy.guardians_reach_guardians:
        pairs.add((GUARDIAN, GUARDIAN))
    if policy.co_guardians_reach:
        pairs.add((CO, CO))
    return frozenset(pairs)


def relations(directory: Directory, identities: Mapping[str, str], policy: AccessPolicy, *,
              secret: str) -> Relations:
    def group(kind: str, key: str) -> str:
        return kind + hmac.new(secret.encode(), key.encode(), hashlib.sha256).hexdigest()[:20]

    links: set[tuple[str, str, str]] = set()

    def add(grp: str, pids: Iterable[str], side: str) -> None:
        for pid in pids:
            mxid = identities.get(pid)
            if mxid is not None:  # people without an account are nobody to reach
                links.add((grp, mxid, side))

    for person in directory.staff.values():
        schools = set(person.schools) | set(person.director_of) | {ref.uai for ref in person.classes}
        for uai in schools:
            add(group("s:", uai), [person.id], STAFF)
        for uai in person.director_of:
            add(group("s:", uai), [person.id], DIRECTOR)
        for ref in person.classes:
            add(group("c:", str(ref)), [person.id], TEACHER)
    for pupil in directory.pupils.values():
        add(group("f:", pupil.id), pupil.guardians, CO)
        for ref in pupil.classes:
            add(group("c:", str(ref)), pupil.guardians, GUARDIAN)
        for uai in {ref.uai for ref in pupil.classes}:
            add(group("s:", uai), pupil.guardians, PARENT)
    return Relations(frozenset(links), allowed_pairs(policy), frozenset(policy.unrestricted))


def managed_rooms(desired: Mapping[str, DesiredRoom],
                  families: Mapping[str, tuple[frozenset[str], ...]] | None = None) -> list[ManagedRoom]:
    """Every desired room as the module sees it: members (and the bridge's power for them), and
    the families of a class or school room (for announcements' counts)."""
    out = []
    for key, room in desired.items():
        users = room.power_levels.get("users") or {}
        out.append(ManagedRoom(room.alias_localpart, room.template, room.history_visibility,
                               {m: int(users.get(m, 0)) for m in room.members}, (families or {}).get(key, ())))
    return out


def families_by_room(directory: Directory, identities: Mapping[str, str],
                     keys: Iterable[str]) -> dict[str, tuple[frozenset[str], ...]]:
    """Room key -> the families of its pupils (each: the pupil's legal guardians with an account),
    for class rooms ("template:UAI:CODE:YEAR") and school rooms ("template:UAI")."""
    by_class: dict[tuple[str, str], list[frozenset[str]]] = {}
    by_school: dict[str, list[frozenset[str]]] = {}
    for pupil in sorted(directory.pupils.values(), key=lambda p: p.id):
        family = frozenset(identities[g] for g in pupil.guardians if g in identities)
        if not family or not pupil.classes:
            continue
        for ref in pupil.classes:
            by_class.setdefault((ref.uai, ref.code), []).append(family)
        by_school.setdefault(pupil.classes[0].uai, []).append(family)
    out: dict[str, tuple[frozenset[str], ...]] = {}
    for key in keys:
        parts = key.split(":")
        found = by_class.get((parts[1], parts[2])) if len(parts) == 4 else by_school.get(parts[1]) \
            if len(parts) == 2 else None
        if found:
            out[key] = tuple(found)
    return out
