"""Bodies of the homeserver requests the executor sends (pure), shared with the benchmarks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.rooms.desired import ROOM_STATE_TYPE, DesiredRoom

ARCHIVED_TOPIC = {"fr": "Salon archivé : lecture seule. Il sera vidé de ses membres dans {days} jours.",
                  "en": "Archived room: read-only. Its members will be removed in {days} days."}
ARCHIVED_PREFIX = {"fr": "[Archivé] ", "en": "[Archived] "}
MEGOLM = "m.megolm.v1.aes-sha2"
JOIN_RULE = "invite"  # every managed room: nobody gets in without the bridge's (or a moderator's) invite
GUEST_ACCESS = "forbidden"


def security_state(d: DesiredRoom) -> dict[str, dict[str, str]]:
    """The security state a managed room must hold, by event type (pure). Encryption can't be
    removed once on, so an unencrypted template only never asks for it."""
    out = {"m.room.join_rules": {"join_rule": JOIN_RULE},
           "m.room.history_visibility": {"history_visibility": d.history_visibility},
           "m.room.guest_access": {"guest_access": GUEST_ACCESS}}
    if d.encrypted:
        out["m.room.encryption"] = {"algorithm": MEGOLM}
    return out


def create_room_body(d: DesiredRoom, *, invite: list[str]) -> dict[str, Any]:
    """The createRoom request for a desired room (pure): all state in one request."""
    security = security_state(d)
    initial_state: list[dict[str, Any]] = [
        {"type": etype, "state_key": "", "content": security[etype]}
        for etype in ("m.room.guest_access", "m.room.history_visibility", "m.room.join_rules")]
    # Marks the room as the bridge's, without personal data: the template, and the keyed hash the
    # alias is made of (the homeserver module finds the room's entitled people under it).
    initial_state.append({"type": ROOM_STATE_TYPE, "state_key": "",
                          "content": {"template": d.template, "ref": d.alias_localpart}})
    if d.encrypted:
        initial_state.append({"type": "m.room.encryption", "state_key": "", "content": security["m.room.encryption"]})
    if d.retention_ms is not None:
        initial_state.append({"type": "m.room.retention", "state_key": "",
                              "content": {"max_lifetime": d.retention_ms}})
    body: dict[str, Any] = {
        "preset": "private_chat", "visibility": "private", "name": d.name,
        "room_alias_name": d.alias_localpart, "initial_state": initial_state,
        "power_level_content_override": dict(d.power_levels), "invite": invite,
    }
    if d.topic:
        body["topic"] = d.topic
    if d.is_space:
        body["creation_content"] = {"type": "m.space"}
    return body


def creators_privileged(room_version: str) -> bool:
    """Room versions where creators hold unlimited power outside `users` (MSC4289)."""
    if room_version.startswith("org.matrix.hydra"):
        return True
    return room_version.isdigit() and int(room_version) >= 12


def privileged_creators(create: Mapping[str, Any]) -> set[str]:
    """Who holds unlimited power by creating the room (its `m.room.create` event): its sender and
    additional creators from room version 12 on, nobody before it (the creator is then an
    ordinary `users` entry)."""
    content = create.get("content") or {}
    if not creators_privileged(str(content.get("room_version", "1"))):
        return set()
    return {str(create.get("sender")), *(content.get("additional_creators") or [])}
