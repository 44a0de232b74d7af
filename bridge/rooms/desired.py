"""Desired state (pure): directory + templates + identities -> rooms, members, power levels, Spaces."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bridge.directory.model import ClassRef, Directory, Pupil
from bridge.rooms.templates import RoomTemplate

ROOM_STATE_TYPE = "fr.ent-bridge.room"
SPACE_TEMPLATE = "space"


@dataclass(frozen=True)
class DesiredRoom:
    key: str
    template: str
    uai: str
    alias_localpart: str
    name: str
    topic: str
    members: frozenset[str]
    power_levels: Mapping[str, Any]
    encrypted: bool = True
    history_visibility: str = "joined"
    is_space: bool = False
    space_key: str | None = None
    # Listed among its Space's children (m.space.child, which every member of the Space reads), or
    # only naming its Space itself (m.space.parent): per-pupil rooms, whose ids are not for other families.
    space_listed: bool = True
    retention_ms: int | None = None
    owner: str | None = None  # who runs the room; None: the bot (a keyless user: no content inspection)


@dataclass(frozen=True)
class DesiredState:
    rooms: Mapping[str, DesiredRoom]
    warnings: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Settings:
    bot_user_id: str
    key_secret: str
    alias_prefix: str
    language: str = "fr"
    rollover_month: int = 8  # 1 August: a school year starts
    keyless_user_id: str = ""
    keyless_templates: frozenset[str] = frozenset()  # templates whose rooms the keyless user runs


def school_year(now: datetime, *, rollover_month: int = 8) -> str:
    start = now.year if now.month >= rollover_month else now.year - 1
    return f"{start}-{start + 1}"


def school_of_key(key: str) -> str | None:
    """The UAI inside a room key ("template:UAI:…"), the school the room belongs to."""
    parts = key.split(":")
    return parts[1] if len(parts) > 1 and parts[1] else None


def alias_localpart(key: str, *, secret: str, prefix: str) -> str:
    """Keyed HMAC of the room key: stable, unguessable, and free of personal data."""
    digest = hmac.new(secret.encode(), key.encode(), hashlib.sha256).hexdigest()[:24]
    return f"{prefix}{digest}"


_ADMIN_ONLY = ("m.room.power_levels", "m.room.encryption", "m.room.history_visibility", "m.room.join_rules",
               "m.room.guest_access", "m.room.canonical_alias", "m.room.tombstone", "m.room.server_acl",
               "m.space.child", "m.space.parent", "m.room.retention", ROOM_STATE_TYPE)
_EVENTS: Mapping[str, int] = {**{t: 100 for t in _ADMIN_ONLY}, "m.room.name": 50, "m.room.topic": 50,
                              "m.room.avatar": 50, "m.room.pinned_events": 50}


def power_levels(*, bot: str, users: Mapping[str, int], events_default: int, room_mention: str,
                 is_space: bool = False) -> dict[str, Any]:
    """The complete power-levels content the bridge wants. Only moderators (50) invite, kick,
    redact or change state; structural state (encryption, power levels, join rules) is the bot's.

    The bot is not listed: it creates every room, and from room version 12 on the creator holds
    unlimited power and must not appear in `users` (the executor adds it for older versions).
    The `events` mapping is shared between rooms (never mutated): a département has 10^5 rooms."""
    return {
        "users": {u: lvl for u, lvl in sorted(users.items()) if lvl > 0 and u != bot},
        "users_default": 0,
        "events_default": 100 if is_space else events_default,
        "state_default": 50,
        "invite": 50,
        "kick": 50,
        "ban": 50,
        "redact": 50,
        "events": _EVENTS,
        "notifications": {"room": 50 if room_mention == "moderators" else 0},
    }


def _render(texts: Mapping[str, str], language: str, values: Mapping[str, str]) -> str:
    text = texts.get(language) or texts.get("fr") or ""
    return text.format(**values)


def _school_of(pupil: Pupil) -> str | None:
    return pupil.classes[0].uai if pupil.classes else None


def compute(directory: Directory, templates: Mapping[str, RoomTemplate], identities: Mapping[str, str], *,
            settings: Settings, now: datetime) -> DesiredState:
    year = school_year(now, rollover_month=settings.rollover_month)
    teachers_of = directory.teachers_of_class()
    pupils_of = directory.pupils_of_class()
    head_of: dict[ClassRef, list[str]] = {}
    for person in directory.staff.values():
        for ref in person.head_teacher_of:
            head_of.setdefault(ref, []).append(person.id)
    directors: dict[str, list[str]] = {}
    staff_of: dict[str, list[str]] = {}
    teachers_of_school: dict[str, list[str]] = {}
    for person in directory.staff.values():
        for uai in person.director_of:
            directors.setdefault(uai, []).append(person.id)
        for uai in person.schools:
            staff_of.setdefault(uai, []).append(person.id)
            if person.teacher or person.classes:
                teachers_of_school.setdefault(uai, []).append(person.id)
    guardians_of_school: dict[str, set[str]] = {}
    for pupil in directory.pupils.values():
        if (pupil_uai := _school_of(pupil)) is not None:
            guardians_of_school.setdefault(pupil_uai, set()).update(pupil.guardians)

    rooms: dict[str, DesiredRoom] = {}
    warnings: list[str] = []
    unmapped: set[str] = set()

    # Roles by ascending power: assigning in this order leaves each person their highest level.
    ascending = {t.name: sorted(t.roles.items(), key=lambda kv: kv[1]) for t in templates.values()}

    def add(t: RoomTemplate, key: str, uai: str, values: dict[str, str], role_members: dict[str, Any]) -> None:
        levels: dict[str, int] = {}
        for role, level in ascending[t.name]:
            for pid in role_members.get(role, ()):
                mxid = identities.get(pid)
                if mxid is None:
                    unmapped.add(pid)
                else:
                    levels[mxid] = level
        owner = settings.keyless_user_id if t.name in settings.keyless_templates else None
        levels.pop(settings.bot_user_id, None)
        if owner:
            levels.pop(owner, None)
        school = directory.schools.get(uai)
        values = {"school_name": school.name if school else uai, "uai": uai, "school_year": year, **values}
        rooms[key] = DesiredRoom(
            key=key, template=t.name, uai=uai,
            alias_localpart=alias_localpart(key, secret=settings.key_secret, prefix=settings.alias_prefix),
            name=_render(t.room_name, settings.language, values), topic=_render(t.topic, settings.language, values),
            members=frozenset(levels),
            power_levels=power_levels(bot=settings.bot_user_id, users=levels, events_default=t.events_default,
                                      room_mention=t.room_mention),
            encrypted=t.encrypted, history_visibility=t.history_visibility,
            space_key=f"{SPACE_TEMPLATE}:{uai}" if t.in_space else None, space_listed=t.scope != "pupil",
            retention_ms=t.retention_ms, owner=owner)

    for t in sorted(templates.values(), key=lambda t: t.name):
        if t.scope == "school":
            for uai in sorted(directory.schools):
                school_heads = sorted({h for ref, hs in head_of.items() if ref.uai == uai for h in hs})
                add(t, f"{t.name}:{uai}", uai, {}, {
                    "director": directors.get(uai, []), "teachers": teachers_of_school.get(uai, []),
                    "head_teachers": school_heads, "staff": staff_of.get(uai, []),
                    "guardians": sorted(guardians_of_school.get(uai, set()))})
        elif t.scope == "class":
            for ref, pupil_ids in sorted(pupils_of.items()):
                klass = directory.classes.get(ref)
                guardians = sorted({g for p in pupil_ids for g in directory.pupils[p].guardians})
                add(t, f"{t.name}:{ref.uai}:{ref.code}:{year}", ref.uai,
                    {"class_label": klass.label if klass else ref.code, "class_code": ref.code,
                     "level": klass.level if klass else ""},
                    {"director": directors.get(ref.uai, []), "teachers": teachers_of.get(ref, ()),
                     "head_teacher": head_of.get(ref, []), "guardians": guardians})
        else:
            for pupil in sorted(directory.pupils.values(), key=lambda p: p.id):
                pupil_school = _school_of(pupil)
                if pupil_school is None or not pupil.guardians:
                    continue  # no family room without a class or without a legal guardian
                ref = pupil.classes[0]
                klass = directory.classes.get(ref)
                if len(pupil.classes) == 1:  # the common case: the class's lists as they are
                    teachers: Any = teachers_of.get(ref, ())
                    heads: Any = head_of.get(ref, ())
                else:
                    teachers = sorted({t_ for r in pupil.classes for t_ in teachers_of.get(r, ())})
                    heads = sorted({h for r in pupil.classes for h in head_of.get(r, [])})
                add(t, f"{t.name}:{pupil_school}:{pupil.id}", pupil_school,
                    {"class_label": klass.label if klass else ref.code, "class_code": ref.code,
                     "level": klass.level if klass else "", "pupil_first_name": pupil.first_name,
                     "pupil_last_initial": pupil.last_name[:1].upper()},
                    {"director": directors.get(pupil_school, []), "teachers": teachers, "head_teacher": heads,
                     "guardians": pupil.guardians})

    # One Space per school holding its rooms; its members are everyone in them.
    space_members: dict[str, set[str]] = {}
    for r in rooms.values():
        if r.space_key:
            space_members.setdefault(r.space_key, set()).update(r.members)
    for uai in sorted({r.uai for r in rooms.values() if r.space_key}):
        key = f"{SPACE_TEMPLATE}:{uai}"
        members = frozenset(space_members.get(key, ()))
        school = directory.schools.get(uai)
        rooms[key] = DesiredRoom(
            key=key, template=SPACE_TEMPLATE, uai=uai,
            alias_localpart=alias_localpart(key, secret=settings.key_secret, prefix=settings.alias_prefix),
            name=school.name if school else uai, topic="", members=members,
            power_levels=power_levels(bot=settings.bot_user_id, users={}, events_default=100,
                                      room_mention="moderators", is_space=True),
            encrypted=False, history_visibility="joined", is_space=True)
    if unmapped:
        warnings.append(f"{len(unmapped)} people have no Matrix account mapping and are left out")
    return DesiredState(dict(sorted(rooms.items())), tuple(warnings))
