"""The Synapse settings a school deployment needs (docs/synapse.md says why): one source for the
tests' and the demo's homeserver, `ent-bridge docker-init` and `ent-bridge doctor`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

MODULE = "bridge.access.synapse_module.AccessModule"


def school_settings() -> dict[str, Any]:
    """What a school deployment sets beyond Synapse's defaults (docs/synapse.md says why;
    `ent-bridge doctor` checks a homeserver.yaml against them)."""
    return {
        "user_directory": {"enabled": True, "search_all_users": False},
        "require_auth_for_profile_requests": True,
        "limit_profile_requests_to_users_who_share_rooms": True,
        "include_profile_data_on_invite": False,
        "room_list_publication_rules": [{"action": "deny"}],
        "allow_public_rooms_without_auth": False,
        "allow_public_rooms_over_federation": False,
        "enable_registration": False,
        "allow_guest_access": False,
        "federation_domain_whitelist": [],
        "retention": {"enabled": True},
        "redaction_retention_period": "7d",
        "media_retention": {"local_media_lifetime": "365d"},
        "url_preview_enabled": False,
        "presence": {"enabled": False},
    }


def access_module(snapshot: Path, bridge_users: list[str], *, refresh_seconds: float = 10,
                  registration: Path | None = None, spool: Path | None = None) -> dict[str, Any]:
    """The `modules:` entry of ent-bridge's access module; with the bridge's registration file (as
    Synapse reads it), the module's refusals are sent to the bridge's audit, and with a spool (a
    path in Synapse's own data) those still waiting for the bridge survive a Synapse restart."""
    config: dict[str, Any] = {"snapshot": str(snapshot), "bridge_users": bridge_users,
                              "refresh_seconds": refresh_seconds}
    if registration is not None:
        config["registration"] = str(registration)
    if spool is not None:
        config["spool"] = str(spool)
    return {"module": MODULE, "config": config}
