"""Versioned schema migrations shared by every backend (portable SQL, one file a version)."""

from __future__ import annotations

from importlib import resources


def migrations() -> list[tuple[int, list[str]]]:
    """(version, statements) in order, read from the NNNN_name.sql files beside this module."""
    found: list[tuple[int, list[str]]] = []
    for entry in resources.files(__package__).iterdir():
        name = entry.name
        if not name.endswith(".sql"):
            continue
        version = int(name.split("_", 1)[0])
        text = entry.read_text(encoding="utf-8")
        lines = [ln for ln in text.splitlines() if not ln.strip().startswith("--")]
        statements = [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
        found.append((version, statements))
    return sorted(found)
