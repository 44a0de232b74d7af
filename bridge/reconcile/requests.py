"""Bodies of the homeserver requests the executor sends (pure), shared with the benchmarks."""

from __future__ import annotations

from typing import Any

from bridge.rooms.desired import ROOM_STATE_TYPE, DesiredRoom

ARCHIVED_TOPIC = {"fr": "Salon archivé : lecture seule. Il sera vidé de ses membres dans {days} jours.",
                  "en": "Archived room: read-only. Its members will be removed in {days} days."}
ARCHIVED_PREFIX = {"fr": "[Archivé] ", "en": "[Archived] "}


def create_room_body(d: DesiredRoom, *, invite: list[str]) -> dict[str, Any]:
    """The createRoom request for a desired room (pure): all state in one request."""
    initial_state: list[dict[str, Any]] = [
        {"type": "m.room.guest_access", "state_key": "", "content": {"guest_access": "forbidden"}},
        {"type": "m.room.history_visibility", "state_key": "",
         "content": {"history_visibility": d.history_visibility}},
        {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "invite"}},
        # Marks the room as the bridge's, without personal data (the template only).
        {"type": ROOM_STATE_TYPE, "state_key": "", "content": {"template": d.template}},
    ]
    if d.encrypted:
        initial_state.append({"type": "m.room.encryption", "state_key": "",
                              "content": {"algorithm": "m.megolm.v1.aes-sha2"}})
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
