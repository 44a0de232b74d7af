"""Retention sweeper (I/O): redacts messages older than each room's lifetime, then verifies.

Enforced by the bridge itself whether or not the homeserver's own retention jobs are on:
the bot, creator of every managed room, redacts; a second pass counts what is left.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping
from urllib.parse import quote

from bridge.audit import AuditLog
from bridge.logging import get_logger
from bridge.matrix.appservice_api import AppserviceAPI
from bridge.rooms.retention import expired, is_expired

REASON = {"fr": "Durée de conservation dépassée", "en": "Retention period exceeded"}


@dataclass
class SweepReport:
    redacted: int = 0
    remaining: int = 0
    rooms: int = 0
    by_room: dict[str, tuple[int, int]] = field(default_factory=dict)


async def _history(api: AppserviceAPI, room_id: str, *, bot: str, batch: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        params = {"dir": "b", "limit": str(batch)}
        if token:
            params["from"] = token
        page = await api.request("GET", f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/messages",
                                 user_id=bot, params=params)
        chunk = page.get("chunk") or []
        events.extend(chunk)
        token = page.get("end")
        if not chunk or not token:
            return events


async def sweep_room(api: AppserviceAPI, room_id: str, *, bot: str, lifetime_ms: int, now_ms: int,
                     batch: int = 100, language: str = "fr") -> tuple[int, int]:
    """(redacted, remaining after verification) for one room."""
    cutoff = now_ms - lifetime_ms
    targets = expired(await _history(api, room_id, bot=bot, batch=batch), cutoff_ms=cutoff)
    for event_id in targets:
        await api.redact(room_id, event_id, as_user=bot, reason=REASON.get(language, REASON["fr"]))
    remaining = sum(1 for e in await _history(api, room_id, bot=bot, batch=batch) if is_expired(e, cutoff_ms=cutoff))
    return len(targets), remaining


async def sweep(api: AppserviceAPI, rooms: Iterable[tuple[str, str, int]], *, bot: str, now_ms: int,
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


async def sweep_managed(config: Any, *, store: Any, api: AppserviceAPI, now_ms: int | None = None) -> SweepReport:
    """Sweep the managed rooms, each with its template's lifetime (from the policies)."""
    import time

    from bridge.policy.loader import load_policies
    from bridge.rooms.templates import keyless_templates, load_templates

    templates = load_templates(config.policies_dir)
    keyless = keyless_templates(templates, {n: p.content_inspection
                                            for n, p in load_policies(config.policies_dir).profiles.items()})
    records = [r for r in await store.all_rooms() if r.template in templates and templates[r.template].retention_ms]
    rooms = [(r.room_key, r.room_id, templates[r.template].retention_ms) for r in records]
    return await sweep(api, rooms, bot=config.bot_user_id,  # type: ignore[arg-type]
                       actors={r.room_id: config.keyless_user_id for r in records if r.template in keyless},
                       now_ms=now_ms if now_ms is not None else int(time.time() * 1000),
                       audit=AuditLog(store, key=config.audit_key), language=config.rooms.language)
