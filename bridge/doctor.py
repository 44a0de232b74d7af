"""`ent-bridge doctor` (pure checks): homeserver settings a school deployment must not keep, and
the bridge's own files that anyone but the bridge could read. Each finding says why and the fix."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.private_files import DIR_MODE, too_open
from bridge.synapse_settings import MODULE


@dataclass(frozen=True)
class Finding:
    key: str
    why: str
    fix: str


def _get(config: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    value: Any = config
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return default
        value = value[part]
    return value


def _duration_days(value: Any) -> float | None:
    """Synapse's durations: a number of ms, or "30d", "12h", "1w", "1y"…; None: never / unknown."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) / 86_400_000
    if isinstance(value, str) and value[:-1].isdigit():
        per_day = {"s": 1 / 86_400, "m": 1 / 1440, "h": 1 / 24, "d": 1, "w": 7, "y": 365}.get(value[-1])
        return int(value[:-1]) * per_day if per_day else None
    return None


def homeserver_findings(hs: Mapping[str, Any]) -> list[Finding]:
    """Settings of a homeserver.yaml (parsed) that let people reach or read more than a school allows."""
    out: list[Finding] = []

    def want(key: str, ok: bool, why: str, fix: str) -> None:
        if not ok:
            out.append(Finding(key, why, fix))

    entries = [m for m in hs.get("modules") or [] if isinstance(m, Mapping)]
    ours = next((m for m in entries if m.get("module") == MODULE), None)
    want("modules", ours is not None, "without ent-bridge's module, a parent finds and writes to every parent "
         "who shares a room with them, and state that breaks a room's template is accepted until the next repair",
         f"add `- module: {MODULE}` with its config (README, 'Module Synapse')")
    module_config = ours.get("config") if ours is not None else None
    want("modules.config.registration",
         ours is None or (isinstance(module_config, Mapping) and bool(module_config.get("registration"))),
         "what the module refuses (invites, joins, names) is only in Synapse's log, not in the bridge's audit",
         "registration: the path of the bridge's registration file, as Synapse reads it")
    want("user_directory.search_all_users", not _get(hs, "user_directory.search_all_users", False),
         "every account of the server shows in every search", "search_all_users: false")
    want("require_auth_for_profile_requests", bool(hs.get("require_auth_for_profile_requests", False)),
         "anyone, without an account, reads any user's name and avatar", "require_auth_for_profile_requests: true")
    want("limit_profile_requests_to_users_who_share_rooms",
         bool(hs.get("limit_profile_requests_to_users_who_share_rooms", False)),
         "any user reads the name of any other (a family's name from a guessed Matrix id)",
         "limit_profile_requests_to_users_who_share_rooms: true")
    want("include_profile_data_on_invite", hs.get("include_profile_data_on_invite", True) is False,
         "an invite carries the invitee's name and avatar to whoever sees it", "include_profile_data_on_invite: false")
    rules = hs.get("room_list_publication_rules") or []
    want("room_list_publication_rules", not any(isinstance(r, Mapping) and r.get("action") == "allow" for r in rules),
         "rooms can be published in the public room list", "room_list_publication_rules: [{action: deny}]")
    want("allow_public_rooms_without_auth", not hs.get("allow_public_rooms_without_auth", False),
         "the room list is readable without an account", "allow_public_rooms_without_auth: false")
    want("allow_public_rooms_over_federation", not hs.get("allow_public_rooms_over_federation", False),
         "other servers read the room list", "allow_public_rooms_over_federation: false")
    want("enable_registration", not hs.get("enable_registration", False),
         "anyone can make an account; accounts come from the directory (SSO, provisioning)",
         "enable_registration: false")
    want("allow_guest_access", not hs.get("allow_guest_access", False),
         "guests without an account can join rooms that let them", "allow_guest_access: false")
    want("federation_domain_whitelist", isinstance(hs.get("federation_domain_whitelist"), list),
         "the server federates with any other: pupils' families' messages may be sent to servers the "
         "académie doesn't know", "federation_domain_whitelist: [] (or the académie's own servers)")
    want("retention.enabled", bool(_get(hs, "retention.enabled", False)),
         "Synapse doesn't purge expired messages: the rooms' retention (RGPD) stays a promise",
         "retention: {enabled: true, purge_jobs: [...]} ")
    redaction = _duration_days(hs.get("redaction_retention_period", "7d"))
    want("redaction_retention_period", redaction is not None and redaction <= 7,
         "a removed message's content is kept longer than a week (or forever)", "redaction_retention_period: 7d")
    lifetime = _duration_days(_get(hs, "media_retention.local_media_lifetime"))
    want("media_retention.local_media_lifetime", lifetime is not None and lifetime <= 366,
         "uploaded files (photos of pupils) are kept forever", "media_retention: {local_media_lifetime: 365d}")
    want("url_preview_enabled", not hs.get("url_preview_enabled", False),
         "the server fetches every link posted, telling the site who shares it", "url_preview_enabled: false")
    want("presence.enabled", _get(hs, "presence.enabled", True) is False,
         "every family of a class sees when teachers are online", "presence: {enabled: false}")
    return out


def file_findings(paths: Mapping[str, Path], folders: Mapping[str, Path]) -> list[Finding]:
    """The bridge's secrets at rest: files 0600, folders 0700."""
    out = []
    for what, path in paths.items():
        if (mode := too_open(path)) is not None:
            out.append(Finding(str(path), f"{what} is readable beyond the bridge's user (mode {mode:o})",
                               f"chmod 600 {path}"))
    for what, path in folders.items():
        if (mode := too_open(path, allowed=DIR_MODE)) is not None:
            out.append(Finding(str(path), f"{what} is open beyond the bridge's user (mode {mode:o})",
                               f"chmod 700 {path}"))
    return out
