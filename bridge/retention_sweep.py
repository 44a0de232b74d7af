"""Retention sweeper (I/O): redacts messages older than each room's lifetime, then verifies.

Enforced by the bridge itself whether or not the homeserver's own retention jobs are on:
the bot, creator of every managed room, redacts; a second pass counts what is left.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.audit import AuditLog
from bridge.audit import for_config as audit_for_config
from bridge.clock import SYSTEM, Clock
from bridge.config import Config
from bridge.logging import get_logger
from bridge.matrix.port import Homeserver
from bridge.rooms.retention import expired, is_expired
from bridge.store.base import Store

REASON = {"fr": "Durée de conservation dépassée", "en": "Retention period exceeded"}


@dataclass
class SweepReport:
    redacted: int = 0
    remaining: int = 0
    rooms: int = 0
    by_room: dict[str, tuple[int, int]] = field(default_factory=dict)


async def _history(api: Homeserver, room_id: str, *, bot: str, batch: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        page = await api.messages(room_id, as_user=bot, limit=batch, from_token=token)
        chunk = page.get("chunk") or []
        events.extend(chunk)
        token = page.get("end")
        if not chunk or not token:
            return events


async def sweep_room(api: Homeserver, room_id: str, *, bot: str, lifetime_ms: int, now_ms: int,
                     batch: int = 100, language: str = "fr") -> tuple[int, int]:
    """(redacted, remaining after verification) for one room."""
    cutoff = now_ms - lifetime_ms
    targets = expired(await _history(api, room_id, bot=bot, batch=batch), cutoff_ms=cutoff)
    for event_id in targets:
        await api.redact(room_id, event_id, as_user=bot, reason=REASON.get(language, REASON["fr"]))
    remaining = sum(1 for e in await _history(api, room_id, bot=bot, batch=batch) if is_expired(e, cutoff_ms=cutoff))
    return len(targets), remaining


async def sweep(api: Homeserver, rooms: Iterable[tuple[str, str, int]], *, bot: str, now_ms: int,
                audit: AuditLog | None = None, batch: int = 100, language: str = "fr",
                actors: Mapping[str, str] | None = None) -> SweepReport:
    """rooms: (room key, room id, lifetime ms); actors: room id -> the keyless user where it runs the room."""
    report = SweepReport()
    log = get_logger(component="retention")
    for key, room_id, lifetime in rooms:
        redacted, remaining = await sweep_room(api, room_id, bot=(actors or {}).get(room_id, bot),
                                               lifetime_ms=lifetime, now_ms=now_ms, batch=batch, language=language)
        report.rooms += 1
        report.redacted += redacted
        report.remaining += remaining
        report.by_room[key] = (redacted, remaining)
        if redacted or remaining:
            log.info("retention_swept", room_id=room_id, redacted=redacted, remaining=remaining)
            if audit is not None:
                audit.record(actor="ent-bridge", action="retention_sweep", room=key, reason="retention policy",
                             detail={"redacted": redacted, "remaining": remaining, "lifetime_ms": lifetime})
    if audit is not None:
        await audit.flush()
    return report


async def sweep_managed(config: Config, *, store: Store, api: Homeserver, clock: Clock = SYSTEM) -> SweepReport:
    """Sweep the managed rooms, each with its template's lifetime (from the policies)."""
    from bridge.policy.folder import check_folder
    from bridge.rooms.templates import keyless_templates

    templates, policies = check_folder(config.policies_dir)
    keyless = keyless_templates(templates, {n: p.content_inspection for n, p in policies.profiles.items()})
    records = [r for r in await store.all_rooms() if r.template in templates and templates[r.template].retention_ms]
    rooms = [(r.room_key, r.room_id, lifetime) for r in records
             if (lifetime := templates[r.template].retention_ms) is not None]
    return await sweep(api, rooms, bot=config.bot_user_id,
                       actors={r.room_id: config.keyless_user_id for r in records if r.template in keyless},
                       now_ms=clock.now_ms(),
                       audit=audit_for_config(config, store), language=config.rooms.language)
