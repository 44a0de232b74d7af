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


MAX_BYTES = 1024 * 1024  # a policy or config file; directory exports pass their own bound
# Anchors are handy for a few repeated blocks. A bound on their number bounds what they can expand
# to (with 20, nested three by three at best, about 3^(20/3) ≈ 1,500 nodes): an "alias bomb" can't.
MAX_ALIASES = 20


def load_with_lines(path: Path, *, max_bytes: int = MAX_BYTES, max_aliases: int = MAX_ALIASES) -> Any:
    """Refuses, before building anything, a file over `max_bytes` or with more than `max_aliases`
    aliases: a crafted file (billions of laughs) must cost neither minutes nor gigabytes."""
    size = path.stat().st_size
    if size > max_bytes:
        raise InputError(f"file too large ({size} bytes > {max_bytes})", file=str(path))
    text = path.read_text(encoding="utf-8")
    try:
        aliases = 0
        for token in yaml.scan(text, Loader=yaml.SafeLoader):  # linear: no alias is expanded here
            if isinstance(token, yaml.AliasToken):
                aliases += 1
                if aliases > max_aliases:
                    raise InputError(f"more than {max_aliases} YAML aliases (*name): refused",
                                     file=str(path), line=token.start_mark.line + 1)
    except yaml.YAMLError:
        pass  # reported with its line by the load below
    try:
        return yaml.load(text, Loader=_LineLoader)  # noqa: S506 - SafeLoader subclass
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
