"""Who may reach whom (`policies/access.yaml`): the rules the homeserver module enforces."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

from bridge.policy.loader import _build, _Ctx
from bridge.policy.model import GUARDIAN_TARGETS, PAUSE_WRITERS, AccessPolicy, Announcements
from bridge.yamlutil import clean, load_with_lines

FILE = "access.yaml"
ANNOUNCEMENTS_FILE = "announcements.yaml"


_T = TypeVar("_T")


def _one_section(folder: Path, file: str, section: str, cls: type[_T]) -> tuple[_T, _Ctx, dict[str, Any]] | None:
    """A policy file holding one mapping under `section`, built into `cls` (unknown keys refused
    with file, line and column); None when the folder has no such file (the defaults apply)."""
    path = folder / file
    if not path.is_file():
        return None
    data = load_with_lines(path)
    ctx = _Ctx(str(path))
    if not isinstance(data, dict):
        raise ctx.fail(data, None, f"expected a mapping with an {section}: key")
    for key in clean(data):
        if key != section:
            raise ctx.fail(data, key, f"unknown key {key!r} (this file holds {section}:)")
    return _build(ctx, cls, data.get(section), section), ctx, data.get(section) or {}


def load_access(folder: Path) -> AccessPolicy:
    """The folder's access.yaml (`access:` mapping); AccessPolicy's defaults when there is none."""
    found = _one_section(folder, FILE, "access", AccessPolicy)
    if found is None:
        return AccessPolicy()
    policy, ctx, raw = found
    bad = [t for t in policy.guardians_reach if t not in GUARDIAN_TARGETS]
    if bad:
        raise ctx.fail(raw, "guardians_reach", f"guardians_reach: unknown {', '.join(bad)} "
                                               f"(known: {', '.join(GUARDIAN_TARGETS)})")
    if policy.pause_writers not in PAUSE_WRITERS:
        raise ctx.fail(raw, "pause_writers", f"pause_writers: one of {', '.join(PAUSE_WRITERS)}")
    odd = [u for u in policy.unrestricted if not (u.startswith("@") and ":" in u)]
    if odd:
        raise ctx.fail(raw, "unrestricted", f"unrestricted: not Matrix ids: {', '.join(odd)}")
    return policy


def load_announcements(folder: Path) -> Announcements:
    """The folder's announcements.yaml (`announcements:` mapping); the defaults when there is none."""
    found = _one_section(folder, ANNOUNCEMENTS_FILE, "announcements", Announcements)
    if found is None:
        return Announcements()
    value, ctx, raw = found
    if not value.marker.startswith("!") or " " in value.marker:
        raise ctx.fail(raw, "marker", "marker: one word starting with ! (e.g. !annonce)")
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
