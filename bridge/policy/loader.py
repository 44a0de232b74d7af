"""Load moderation policies from YAML with file:line:column errors; derive their JSON Schema."""

from __future__ import annotations

import dataclasses
import types
import typing
from datetime import time
from pathlib import Path
from typing import Any, TypeVar

from bridge.errors import InputError
from bridge.policy.model import ACTIONS, BannedWords, Policies, Profile
from bridge.yamlutil import clean, load_with_lines, where

PROTECTIONS = {"banned_words", "flood", "media", "links", "mentions", "quiet_hours", "fan_out", "names"}


def _parse_time(text: str) -> time | None:
    try:
        hh, mm = str(text).split(":")
        return time(int(hh), int(mm))
    except ValueError:
        return None


class _Ctx:
    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, node: Any, key: str | None, msg: str) -> InputError:
        line, col = where(node, key)
        return InputError(f"{msg}" + (f" (column {col})" if col else ""), file=self.file, line=line)


def _convert(ctx: _Ctx, node: Any, key: str, hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return None if value is None else _convert(ctx, node, key, inner[0], value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ctx.fail(node, key, f"{key}: expected true or false")
        return value
    if hint is int:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ctx.fail(node, key, f"{key}: expected a whole number >= 0")
        return value
    if hint is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise ctx.fail(node, key, f"{key}: expected a number >= 0")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ctx.fail(node, key, f"{key}: expected a text")
        return value
    if hint is time:
        parsed = _parse_time(value)
        if parsed is None:
            raise ctx.fail(node, key, f"{key}: expected a time like 20:00")
        return parsed
    if origin is tuple:
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(i, str) for i in items):
            raise ctx.fail(node, key, f"{key}: expected a list of texts")
        if key == "action":
            bad = [i for i in items if i not in ACTIONS]
            if bad:
                raise ctx.fail(node, key, f"action: unknown {', '.join(bad)} (known: {', '.join(ACTIONS)})")
        return tuple(items)
    raise ctx.fail(node, key, f"{key}: unsupported value")


_T = TypeVar("_T")


def _build(ctx: _Ctx, cls: type[_T], raw: Any, what: str, **extra: Any) -> _T:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ctx.fail(raw, None, f"{what}: expected a mapping")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)} - set(extra)  # type: ignore[arg-type]
    kwargs: dict[str, Any] = dict(extra)
    for key, value in clean(raw).items():
        if key not in names:
            raise ctx.fail(raw, key, f"{what}: unknown key {key!r} (known: {', '.join(sorted(names))})")
        kwargs[key] = _convert(ctx, raw, key, hints[key], value)
    return cls(**kwargs)


def _words(ctx: _Ctx, folder: Path, raw: Any) -> BannedWords:
    if not isinstance(raw, dict):
        raise ctx.fail(raw, None, "banned_words: expected a mapping")
    data = clean(raw)
    words = list(data.get("words") or [])
    if not all(isinstance(w, str) for w in words):
        raise ctx.fail(raw, "words", "banned_words: words must be a list of texts (one word or phrase each)")
    if "words_file" in data:
        path = folder / str(data["words_file"])
        if not path.is_file():
            raise ctx.fail(raw, "words_file", f"banned_words: file {path} not found")
        words += [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()
                  if ln.strip() and not ln.lstrip().startswith("#")]
    if not words:
        raise ctx.fail(raw, None, "banned_words: give words or words_file")
    rest = {k: v for k, v in raw.items() if k not in ("words", "words_file")}
    return _build(ctx, BannedWords, rest, "banned_words", words=tuple(words))


def load_policies(folder: Path) -> Policies:
    """Every `profiles:` mapping of the folder's *.yaml files."""
    profiles: dict[str, Profile] = {}
    for path in sorted(folder.glob("*.yaml")):
        data = load_with_lines(path)
        if not isinstance(data, dict) or "profiles" not in data:
            continue
        ctx = _Ctx(str(path))
        for key in clean(data):
            if key not in ("profiles", "templates"):
                raise ctx.fail(data, key, f"unknown key {key!r} (a policy file holds profiles:)")
        raw_profiles = data["profiles"]
        if not isinstance(raw_profiles, dict):
            raise ctx.fail(data, "profiles", "profiles: expected a mapping of profile names")
        for name in clean(raw_profiles):
            node = raw_profiles[name]
            if not isinstance(node, dict):
                raise ctx.fail(raw_profiles, name, f"profile {name!r}: expected a mapping")
            kwargs: dict[str, Any] = {"name": name}
            protections = node.get("protections") or {}
            for key in clean(node):
                if key not in ("protections", "exempt_power", "content_inspection", "strikes", "max_chars"):
                    raise ctx.fail(node, key, f"profile {name!r}: unknown key {key!r}")
            for pname in clean(protections):
                if pname not in PROTECTIONS:
                    raise ctx.fail(protections, pname, f"profile {name!r}: unknown protection {pname!r} "
                                                       f"(known: {', '.join(sorted(PROTECTIONS))})")
                hint = typing.get_type_hints(Profile)[pname]
                cls = next(a for a in typing.get_args(hint) if a is not type(None))
                kwargs[pname] = (_words(ctx, folder, protections[pname]) if pname == "banned_words"
                                 else _build(ctx, cls, protections[pname], pname))
            base = _build(ctx, Profile, {k: v for k, v in node.items() if k in ("exempt_power", "max_chars",
                                                                                  "content_inspection", "__line__",
                                                                                  "__key_lines__")},
                          f"profile {name!r}", **kwargs)
            if "strikes" in node:
                base = dataclasses.replace(base, strikes=_build(ctx, type(base.strikes), node["strikes"], "strikes"))
            profiles[name] = base
    return Policies(profiles, str(folder))


def _schema_for(cls: type) -> dict[str, Any]:
    props: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[f.name]
        args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
        base = args[0]
        if typing.get_origin(base) is tuple:
            props[f.name] = {"type": "array", "items": {"type": "string", **(
                {"enum": list(ACTIONS)} if f.name == "action" else {})}}
        elif base is bool:
            props[f.name] = {"type": "boolean"}
        elif base is int:
            props[f.name] = {"type": "integer", "minimum": 0}
        elif base is float:
            props[f.name] = {"type": "number", "minimum": 0}
        elif base is time:
            props[f.name] = {"type": "string", "pattern": "^[0-2]?[0-9]:[0-5][0-9]$"}
        elif dataclasses.is_dataclass(base):
            props[f.name] = _schema_for(base)  # type: ignore[arg-type]
        else:
            props[f.name] = {"type": "string"}
    return {"type": "object", "additionalProperties": False, "properties": props}


def json_schema() -> dict[str, Any]:
    """JSON Schema of policy files, generated from the model so it never drifts from the loader."""
    profile = _schema_for(Profile)
    protections = {k: profile["properties"].pop(k) for k in sorted(PROTECTIONS)}
    protections["banned_words"]["properties"]["words_file"] = {"type": "string"}
    profile["properties"].pop("name")
    profile["properties"]["protections"] = {"type": "object", "additionalProperties": False,
                                            "properties": protections}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "ent-bridge moderation policies",
            "type": "object", "properties": {"profiles": {"type": "object", "additionalProperties": profile}}}
