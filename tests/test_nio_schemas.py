"""The bot's compiled JSON Schema checks answer as nio's own validator: valid events parse, invalid
ones are still refused (a BadEvent), the same defaults are filled in, on every schema nio has."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import jsonschema
import nio
import nio.events.misc
import nio.schemas
import pytest

from bridge.matrix import nio_schemas

SCHEMAS = {name: getattr(nio.schemas.Schemas, name) for name in dir(nio.schemas.Schemas) if not name.startswith("_")}
SAMPLES = {"string": "@a:ent.test", "integer": 3, "number": 1.5, "boolean": True, "array": [], "object": {},
           "null": None}
WRONG = {"string": 7, "integer": "7", "number": "x", "boolean": "yes", "array": {}, "object": [], "null": 0}


def _sample(schema: Any, depth: int = 0) -> Any:
    """An instance built from the schema: its required and other properties, each of its type."""
    if not isinstance(schema, dict) or depth > 6:
        return {}
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type", "object")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "object":
        props = schema.get("properties", {})
        return {key: _sample(sub, depth + 1) for key, sub in props.items() if "default" not in sub}
    if kind == "array":
        return [_sample(schema.get("items", {}), depth + 1)] if isinstance(schema.get("items"), dict) else []
    if kind == "string" and "pattern" in schema:
        return {"^!.+:.+$": "!r:ent.test", "^@.*:.+$": "@a:ent.test"}.get(schema["pattern"], "x.y")
    return SAMPLES.get(kind, "x")


def _variants(schema: Any) -> Iterator[Any]:
    """The sample, and for each of its properties: left out, of the wrong type, or a bad user id."""
    base = _sample(schema)
    yield base
    props = schema.get("properties", {}) if isinstance(schema, dict) else {}
    if not isinstance(base, dict):
        return
    for key, sub in props.items():
        if not isinstance(sub, dict):
            continue
        if key in base:
            yield {k: v for k, v in base.items() if k != key}
        kind = sub.get("type")
        if isinstance(kind, str):
            yield {**base, key: WRONG.get(kind, 0)}
        yield {**base, key: "not-a-user-id"}
        if kind == "object":
            for inner in _variants(sub):
                yield {**base, key: inner}


def _nio_verdict(instance: Any, schema: Any) -> tuple[bool, Any]:
    data = copy.deepcopy(instance)
    try:
        nio.schemas.Validator(schema, format_checker=nio.schemas.Checker).validate(data)
    except (jsonschema.ValidationError, jsonschema.SchemaError):
        return False, None
    except Exception as exc:  # noqa: BLE001 - nio's validator fails on one of nio's schemas: so must ours
        return False, type(exc).__name__
    return True, data


def _compiled_verdict(instance: Any, schema: Any) -> tuple[bool, Any]:
    data = copy.deepcopy(instance)
    try:
        nio_schemas.validate_json(data, schema)
    except jsonschema.ValidationError:
        return False, None
    except Exception as exc:  # noqa: BLE001 - see above
        return False, type(exc).__name__
    return True, data


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_every_schema_gives_nio_s_verdict_and_defaults(name: str) -> None:
    schema = SCHEMAS[name]
    checked = 0
    for instance in _variants(schema):
        assert _compiled_verdict(instance, schema) == _nio_verdict(instance, schema), (name, instance)
        checked += 1
    assert checked >= 1


def test_compiled_validation_accepts_and_refuses_as_nio_does() -> None:
    nio_schemas.install()
    assert nio.events.misc.validate_json is nio_schemas.validate_json
    good = {"type": "m.room.message", "event_id": "$1", "sender": "@a:ent.test", "origin_server_ts": 1,
            "content": {"msgtype": "m.text", "body": "bonjour"}}
    bad = {**good, "sender": "not-a-user-id"}
    for _ in range(2):  # the second time from the cache
        assert isinstance(nio.Event.parse_event(good), nio.RoomMessageText)
        assert isinstance(nio.Event.parse_event(bad), nio.BadEvent)
        assert isinstance(nio.Event.parse_event({**good, "content": {"body": 3}}), (nio.BadEvent, nio.UnknownBadEvent))


def test_a_refusal_never_carries_the_value() -> None:
    secret = "une insulte bien cachée"
    with pytest.raises(jsonschema.ValidationError) as refused:
        nio_schemas.validate_json({"type": "m.room.message", "event_id": "$1", "sender": secret,
                                   "origin_server_ts": 1, "content": {"msgtype": "m.text", "body": secret}},
                                  nio.schemas.Schemas.room_event)
    assert secret not in str(refused.value)
