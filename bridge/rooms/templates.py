"""Room templates from policies/*.yaml, validated with file:line:column errors (pure)."""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.errors import InputError
from bridge.yamlutil import clean, load_with_lines, where

SCOPES = ("school", "class", "pupil")
ROLES: dict[str, frozenset[str]] = {
    "school": frozenset({"director", "teachers", "head_teachers", "staff", "guardians"}),
    "class": frozenset({"director", "teachers", "head_teacher", "guardians"}),
    "pupil": frozenset({"director", "teachers", "head_teacher", "guardians"}),
}
PLACEHOLDERS: dict[str, frozenset[str]] = {
    "school": frozenset({"school_name", "uai", "school_year"}),
    "class": frozenset({"school_name", "uai", "school_year", "class_label", "class_code", "level"}),
    "pupil": frozenset({"school_name", "uai", "school_year", "class_label", "class_code", "level",
                        "pupil_first_name", "pupil_last_initial"}),
}
HISTORY = ("joined", "invited", "shared")
KEYS = frozenset({"scope", "name", "topic", "roles", "encrypted", "history_visibility", "events_default",
                  "room_mention", "in_space", "moderation", "retention", "description", "reports"})


@dataclass(frozen=True)
class RoomTemplate:
    name: str  # the template's own name: class, family…
    scope: str
    room_name: Mapping[str, str]  # language -> format string
    topic: Mapping[str, str]
    roles: Mapping[str, int]  # role -> power level
    encrypted: bool = True
    history_visibility: str = "joined"
    events_default: int = 0
    room_mention: str = "moderators"
    in_space: bool = True
    moderation: str | None = None
    retention_ms: int | None = None  # messages older than this are removed (m.room.retention)
    reports: bool = False  # the school's moderators room: moderation reports of its school go there


def _fields(fmt: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(fmt) if f}


def _parse_template(tname: str, raw: Any, *, file: str) -> RoomTemplate:
    def fail(msg: str, key: str | None = None, node: Any = None) -> InputError:
        line, col = where(node if node is not None else raw, key)
        suffix = f" (column {col})" if col else ""
        return InputError(f"template {tname!r}: {msg}{suffix}", file=file, line=line)

    if not isinstance(raw, dict):
        raise fail("must be a mapping")
    for key in clean(raw):
        if key not in KEYS:
            raise fail(f"unknown key {key!r} (known: {', '.join(sorted(KEYS))})", key)
    scope = raw.get("scope")
    if scope not in SCOPES:
        raise fail(f"scope must be one of {', '.join(SCOPES)}", "scope")

    def texts(key: str, required: bool) -> dict[str, str]:
        value = raw.get(key)
        if value is None:
            if required:
                raise fail("missing key", key)
            return {}
        if isinstance(value, str):
            value = {"fr": value}
        value = clean(value)
        if not isinstance(value, dict) or "fr" not in value:
            raise fail("must be a text or a mapping with at least 'fr'", key)
        for text in value.values():
            unknown = _fields(str(text)) - PLACEHOLDERS[scope]
            if unknown:
                raise fail(f"unknown placeholder(s) {', '.join(sorted(unknown))} for scope {scope} "
                           f"(allowed: {', '.join(sorted(PLACEHOLDERS[scope]))})", key)
        return {str(k): str(v) for k, v in value.items()}

    roles_raw = raw.get("roles")
    if not isinstance(roles_raw, dict) or not clean(roles_raw):
        raise fail("roles must map role names to power levels", "roles")
    roles: dict[str, int] = {}
    for role, level in clean(roles_raw).items():
        if role not in ROLES[scope]:
            raise fail(f"role {role!r} does not exist for scope {scope} "
                       f"(allowed: {', '.join(sorted(ROLES[scope]))})", role, roles_raw)
        if not isinstance(level, int) or isinstance(level, bool) or not 0 <= level <= 100:
            raise fail("power level must be an integer from 0 to 100", role, roles_raw)
        roles[role] = level
    encrypted = raw.get("encrypted", True)
    if encrypted is not True and scope in ("class", "pupil"):
        raise fail("class and family rooms must be end-to-end encrypted", "encrypted")
    history = raw.get("history_visibility", "joined")
    if history not in HISTORY:
        raise fail(f"history_visibility must be one of {', '.join(HISTORY)}", "history_visibility")
    events_default = raw.get("events_default", 0)
    if not isinstance(events_default, int) or not 0 <= events_default <= 100:
        raise fail("events_default must be an integer from 0 to 100", "events_default")
    mention = raw.get("room_mention", "moderators")
    if mention not in ("moderators", "everyone"):
        raise fail("room_mention must be moderators or everyone", "room_mention")
    reports = raw.get("reports", False)
    if not isinstance(reports, bool) or (reports and scope != "school"):
        raise fail("reports must be true or false, and only a school-scope room can receive reports", "reports")
    return RoomTemplate(
        name=tname, scope=scope, room_name=texts("name", True), topic=texts("topic", False), roles=roles,
        encrypted=bool(encrypted), history_visibility=history, events_default=events_default,
        room_mention=mention, in_space=bool(raw.get("in_space", True)),
        moderation=raw.get("moderation"), retention_ms=_retention(raw, fail), reports=reports,
    )


_UNITS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_duration_ms(text: str) -> int | None:
    """'180d', '12h', '30m', '10s' -> milliseconds; None when malformed."""
    text = text.strip()
    if len(text) < 2 or text[-1] not in _UNITS or not text[:-1].isdigit() or int(text[:-1]) <= 0:
        return None
    return int(text[:-1]) * _UNITS[text[-1]]


def _retention(raw: dict[str, Any], fail: Any) -> int | None:
    value = raw.get("retention")
    if value is None:
        return None
    if not isinstance(value, dict) or set(clean(value)) != {"max_lifetime"}:
        raise fail("retention must be a mapping with max_lifetime (e.g. {max_lifetime: 180d})", "retention")
    ms = parse_duration_ms(str(value["max_lifetime"]))
    if ms is None:
        raise fail("max_lifetime must be a duration like 365d, 12h, 30m or 10s", "max_lifetime", value)
    return ms


def load_templates(folder: Path) -> dict[str, RoomTemplate]:
    """Every `templates:` mapping of the folder's *.yaml files; a name defined twice is an error."""
    out: dict[str, RoomTemplate] = {}
    origin: dict[str, str] = {}
    files = sorted(folder.glob("*.yaml")) if folder.is_dir() else []
    for path in files:
        data = load_with_lines(path)
        if not isinstance(data, dict) or "templates" not in data:
            continue
        templates = data["templates"]
        if not isinstance(templates, dict):
            line, _ = where(data, "templates")
            raise InputError("templates must be a mapping of template names", file=str(path), line=line)
        for tname, raw in clean_keys(templates):
            if tname in out:
                line, _ = where(templates, tname)
                raise InputError(f"template {tname!r} already defined in {origin[tname]}", file=str(path), line=line)
            out[tname] = _parse_template(tname, raw, file=str(path))
            origin[tname] = str(path)
    if not out:
        raise InputError("no room template found (a `templates:` mapping in *.yaml)", file=str(folder))
    return out


def keyless_templates(templates: Mapping[str, RoomTemplate], inspects: Mapping[str, bool]) -> frozenset[str]:
    """Templates whose moderation profile forgoes content inspection (`inspects`: profile -> its
    content_inspection): their rooms are run by the keyless user, never by the bot's device."""
    return frozenset(n for n, t in templates.items()
                     if t.moderation is not None and t.moderation in inspects and not inspects[t.moderation])


def clean_keys(mapping: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(k, v) for k, v in mapping.items() if not k.startswith("__")]
