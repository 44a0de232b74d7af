"""A policies folder read as one value: room templates, moderation profiles and access rules, cross-checked."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from bridge.errors import InputError
from bridge.policy.access import load_access, load_announcements
from bridge.policy.loader import load_policies
from bridge.policy.model import Policies
from bridge.rooms.templates import RoomTemplate, load_templates


def check_folder(folder: Path) -> tuple[dict[str, RoomTemplate], Policies]:
    """Templates and policies of a folder, cross-checked; raises InputError on the first problem.
    The one validation `policy check`, the running bridge's reload and every sync share."""
    templates = load_templates(folder)
    policies = load_policies(folder)
    for name, t in sorted(templates.items()):
        if t.moderation and t.moderation not in policies.profiles:
            raise InputError(f"template {name!r} uses moderation profile {t.moderation!r}, which no file defines "
                             f"(defined: {', '.join(sorted(policies.profiles)) or 'none'})", file=str(folder))
    return templates, dataclasses.replace(policies, access=load_access(folder),
                                          announcements=load_announcements(folder))
