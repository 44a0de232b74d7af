"""YAML loading that remembers where each mapping and key was, for errors with file:line:column."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bridge.errors import InputError

LINE = "__line__"
KEY_LINES = "__key_lines__"


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that stores each mapping's line under '__line__' and each key's (line, column)
    under '__key_lines__'."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict[str, Any]:
    mapping: dict[str, Any] = {str(k): v for k, v in loader.construct_mapping(node, deep=True).items()}
    mapping[LINE] = node.start_mark.line + 1
    mapping[KEY_LINES] = {k.value: (k.start_mark.line + 1, k.start_mark.column + 1)
                          for k, _ in node.value if isinstance(k, yaml.ScalarNode)}
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_with_lines(path: Path) -> Any:
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_LineLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (column {mark.column + 1})" if mark else ""
        raise InputError(f"invalid YAML: {getattr(exc, 'problem', exc)}{where}", file=str(path),
                         line=mark.line + 1 if mark else None) from None


def where(mapping: Any, key: str | None = None) -> tuple[int | None, int | None]:
    """(line, column) of a key in a loaded mapping, or of the mapping itself."""
    if not isinstance(mapping, dict):
        return None, None
    if key is not None and key in mapping.get(KEY_LINES, {}):
        line, col = mapping[KEY_LINES][key]
        return line, col
    return mapping.get(LINE), None


def clean(value: Any) -> Any:
    """The same data without the position bookkeeping."""
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items() if k not in (LINE, KEY_LINES)}
    if isinstance(value, list):
        return [clean(v) for v in value]
    return value
