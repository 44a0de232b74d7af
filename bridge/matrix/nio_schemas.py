"""matrix-nio checks every event against a JSON Schema with the `jsonschema` interpreter: the largest
cost of a decrypted message (about 0.3 ms each). Here each schema is compiled once to Python code
(`fastjsonschema`, draft 4 as nio's validator), with the same verdicts; schemas with defaults
(nio fills them in its own order) keep nio's validator, built once."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import fastjsonschema
import nio.crypto.olm_machine
import nio.events.misc
import nio.responses
import nio.schemas
from jsonschema.exceptions import ValidationError

Check = Callable[[Any], Any]
_built: dict[int, tuple[Any, Check]] = {}  # id(schema) -> (schema, its check); the schema kept alive
DRAFT4 = "http://json-schema.org/draft-04/schema#"


def _format(name: str) -> Callable[[str], bool]:
    """nio's own format check, as a yes/no answer (it raises ValueError on a bad value)."""
    check = nio.schemas.Checker.checkers[name][0]

    def answer(value: str) -> bool:
        try:
            return bool(check(value))
        except ValueError:
            return False

    return answer


def _has_defaults(schema: Any) -> bool:
    stack = [schema]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            if "default" in value:
                return True
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return False


@functools.cache
def _formats() -> dict[str, Callable[[str], bool]]:
    formats = {name: _format(name) for name in nio.schemas.Checker.checkers}
    formats.setdefault("room_id", lambda _value: True)  # unknown to nio's checker: not checked there either
    return formats


def _compiled(schema: Any) -> Check | None:
    """The schema as compiled code, or None where nio's validator must stay."""
    if _has_defaults(schema):
        return None  # nio fills defaults in before it checks `required` and `enum`; the compiler checks first
    try:
        compiled = fastjsonschema.compile({**schema, "$schema": DRAFT4}, formats=_formats(), use_default=True)
    except fastjsonschema.JsonSchemaDefinitionException:
        return None

    def check(instance: Any) -> None:
        try:
            compiled(instance)
        except fastjsonschema.JsonSchemaValueException as exc:
            # nio catches jsonschema's error. Its message names the rule and the path, never the
            # value (a message's text must not reach a log through it).
            raise ValidationError(f"{exc.name}: {exc.rule}") from None

    return check


def _compile(schema: Any) -> Check:
    """The compiled check; for a schema the compiler can't take, nio's validator built once."""
    return _compiled(schema) or nio.schemas.Validator(schema, format_checker=nio.schemas.Checker).validate


def validate_json(instance: Any, schema: Any) -> None:
    """nio's validate_json: raises jsonschema's ValidationError when `instance` doesn't match."""
    entry = _built.get(id(schema))
    if entry is None or entry[0] is not schema:
        entry = _built[id(schema)] = (schema, _compile(schema))
    entry[1](instance)


def install() -> None:
    """Point nio's modules at the compiled version (they imported the function by name)."""
    for module in (nio.schemas, nio.events.misc, nio.responses, nio.crypto.olm_machine):
        module.validate_json = validate_json
