"""Who may reach whom (`policies/access.yaml`): the rules the homeserver module enforces."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from bridge.policy.loader import _build, _Ctx
from bridge.policy.model import GUARDIAN_TARGETS, PAUSE_WRITERS, AccessPolicy, Announcements
from bridge.yamlutil import clean, load_with_lines

FILE = "access.yaml"
ANNOUNCEMENTS_FILE = "announcements.yaml"


def load_access(folder: Path) -> AccessPolicy:
    """The folder's access.yaml (`access:` mapping); AccessPolicy's defaults when there is none."""
    path = folder / FILE
    if not path.is_file():
        return AccessPolicy()
    data = load_with_lines(path)
    ctx = _Ctx(str(path))
    if not isinstance(data, dict):
        raise ctx.fail(data, None, "expected a mapping with an access: key")
    for key in clean(data):
        if key != "access":
            raise ctx.fail(data, key, f"unknown key {key!r} (this file holds access:)")
    policy = _build(ctx, AccessPolicy, data.get("access"), "access")
    bad = [t for t in policy.guardians_reach if t not in GUARDIAN_TARGETS]
    if bad:
        raise ctx.fail(data["access"], "guardians_reach", f"guardians_reach: unknown {', '.join(bad)} "
                                                          f"(known: {', '.join(GUARDIAN_TARGETS)})")
    if policy.pause_writers not in PAUSE_WRITERS:
        raise ctx.fail(data["access"], "pause_writers", f"pause_writers: one of {', '.join(PAUSE_WRITERS)}")
    odd = [u for u in policy.unrestricted if not (u.startswith("@") and ":" in u)]
    if odd:
        raise ctx.fail(data["access"], "unrestricted", f"unrestricted: not Matrix ids: {', '.join(odd)}")
    return policy


def load_announcements(folder: Path) -> Announcements:
    """The folder's announcements.yaml (`announcements:` mapping); the defaults when there is none."""
    path = folder / ANNOUNCEMENTS_FILE
    if not path.is_file():
        return Announcements()
    data = load_with_lines(path)
    ctx = _Ctx(str(path))
    if not isinstance(data, dict):
        raise ctx.fail(data, None, "expected a mapping with an announcements: key")
    for key in clean(data):
        if key != "announcements":
            raise ctx.fail(data, key, f"unknown key {key!r} (this file holds announcements:)")
    value = _build(ctx, Announcements, data.get("announcements"), "announcements")
    if not value.marker.startswith("!") or " " in value.marker:
        raise ctx.fail(data["announcements"], "marker", "marker: one word starting with ! (e.g. !annonce)")
    return value


def json_schema() -> dict[str, Any]:
    """JSON Schema of access.yaml, from the dataclass so it never drifts from the loader."""
    props: dict[str, Any] = {}
    for f in fields(AccessPolicy):
        if f.name == "guardians_reach":
            props[f.name] = {"type": "array", "items": {"enum": list(GUARDIAN_TARGETS)}}
        elif f.name == "pause_writers":
            props[f.name] = {"enum": list(PAUSE_WRITERS)}
        elif f.name == "unrestricted":
            props[f.name] = {"type": "array", "items": {"type": "string", "pattern": "^@[^:]+:.+$"}}
        else:
            props[f.name] = {"type": "boolean"}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "ent-bridge access rules",
            "type": "object", "additionalProperties": False,
            "properties": {"access": {"type": "object", "additionalProperties": False, "properties": props}}}
