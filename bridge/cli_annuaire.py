"""`ent-bridge annuaire …`: directory commands (filled by the directory-import work)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    pass
