"""Media, flood and quiet-hours protections (pure; the clock comes in as an argument)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from bridge.policy.model import Flood, Media, QuietHours
from bridge.policy.texts import Malformed

MEDIA_TYPES = {"m.image", "m.file", "m.video", "m.audio"}


def media(content: dict[str, Any], settings: Media) -> str | None:
    """Any message carrying a file (`url`, or `file` when encrypted), whatever its msgtype says."""
    if content.get("msgtype") not in MEDIA_TYPES and not content.get("url") and not content.get("file"):
        return None
    info = content.get("info") or {}
    if not isinstance(info, dict):
        raise Malformed("info is not an object")
    mime = str(info.get("mimetype") or "")
    if mime not in settings.allowed_mime:
        return f"type de fichier non autorisé ({mime or 'inconnu'})"
    size = info.get("size")
    if isinstance(size, (int, float)) and size > settings.max_size_mb * 1024 * 1024:
        return f"fichier trop volumineux ({size / 1024 / 1024:.1f} Mo > {settings.max_size_mb:g} Mo)"
    return None


def flood(recent_ms: Sequence[int], now_ms: int, settings: Flood) -> str | None:
    """recent_ms: the sender's message times in this room, this message included."""
    window = [t for t in recent_ms if now_ms - t <= settings.per_seconds * 1000]
    if len(window) > settings.max_messages:
        return f"trop de messages ({len(window)} en {settings.per_seconds} s)"
    return None


def in_quiet_hours(now: datetime, settings: QuietHours) -> bool:
    local = now.astimezone(ZoneInfo(settings.timezone))
    if settings.weekends and local.weekday() >= 5:
        return True
    t = local.time()
    if settings.start <= settings.end:
        return settings.start <= t < settings.end
    return t >= settings.start or t < settings.end  # the window crosses midnight
