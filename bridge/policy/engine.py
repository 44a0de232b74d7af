"""The policy engine (pure): one message + its context + now -> decisions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bridge.policy.model import Profile
from bridge.policy.protections import other, text
from bridge.policy.shown_state import MEMBER, SHOWN_STATE, state_texts
from bridge.policy.texts import Malformed, message_texts

MALFORMED_ACTIONS = ("redact", "report")
SIZE_ACTIONS = ("redact", "warn")

QUIET_NOTICE = {
    "fr": "Message bien reçu. Il a été envoyé en dehors des heures de travail de l'équipe : "
          "il sera lu dès la reprise (droit à la déconnexion).",
    "en": "Message received. It was sent outside the staff's working hours and will be read when "
          "they are back (right to disconnect).",
}


@dataclass(frozen=True)
class Message:
    room_id: str
    event_id: str
    sender: str
    sender_power: int
    content: dict[str, Any]
    type: str = "m.room.message"  # a reaction or a name is read, not counted: see evaluate


REACTION = "m.reaction"
# Read like a message, but no message of its own: a reaction's key, a member's name, a topic.
NOT_MESSAGES = frozenset({REACTION, *SHOWN_STATE})


@dataclass(frozen=True)
class Decision:
    protection: str
    actions: tuple[str, ...]
    reason: str
    detail: dict[str, Any] = field(default_factory=dict)


def evaluate(profile: Profile, msg: Message, *, now: datetime, recent_ms: Sequence[int] = (),
             compiled_words: tuple[str, ...] | None = None, read: list[Decision] | None = None) -> list[Decision]:
    """Decisions for one message. Moderators and admins (power >= exempt_power) are exempt.
    `read`: what `read_content` found in it, when that was done beforehand (elsewhere)."""
    if msg.sender_power >= profile.exempt_power:
        return []
    out: list[Decision] = []
    if read is not None:  # read beforehand (elsewhere), or what could not be read at all
        out += read
    elif msg.content:  # empty where the policy forgoes content inspection: metadata rules only
        out += read_content(profile, msg.content, compiled_words, kind=msg.type)
    if msg.type in NOT_MESSAGES:
        # A reaction shows its key under a message, a member's name beside their messages: read
        # like a message's words, but no message of their own (three thumbs up are no flood, a
        # parent joining twenty rooms is no wave, and at night no one is to be told "read
        # tomorrow").
        return out
    now_ms = int(now.timestamp() * 1000)
    if profile.flood and (why := other.flood(recent_ms, now_ms, profile.flood)):
        out.append(Decision("flood", profile.flood.action, why, {"mute_minutes": profile.flood.mute_minutes}))
    if profile.quiet_hours and not out and other.in_quiet_hours(now, profile.quiet_hours):
        out.append(Decision("quiet_hours", profile.quiet_hours.action, "hors des heures de travail"))
    return out


def read_content(profile: Profile, content: dict[str, Any], compiled_words: tuple[str, ...] | None = None,
                 *, kind: str = "m.room.message", staff_names: frozenset[str] = frozenset()) -> list[Decision]:
    """The decisions of the protections that read a message (or the state event `kind` names):
    it depends on nothing else (no memory, no time), so a long message can be read on another
    thread than the one judging. `staff_names`: the names the room's moderators show (a
    member's name must not be one of them)."""
    try:
        if kind in SHOWN_STATE:
            out = _words_and_links(profile, state_texts(kind, content), [], compiled_words)
            name = content.get("displayname")
            if kind == MEMBER and profile.names and isinstance(name, str) and (
                    why := text.impersonation(name, profile.names, staff_names)):
                out.append(Decision("names", profile.names.action, why))
            return out
        return _content(profile, content, compiled_words)
    except Malformed as exc:
        # Fail closed: content of the wrong shape is not guessed at, it is taken down.
        return [Decision("malformed", MALFORMED_ACTIONS, f"message mal formé ({exc})")]


def _content(profile: Profile, content: dict[str, Any], compiled_words: tuple[str, ...] | None) -> list[Decision]:
    """The protections that read the message (every text it shows); raises Malformed."""
    texts, hrefs = message_texts(content)
    out = _words_and_links(profile, texts, hrefs, compiled_words)
    if out and out[0].protection == "size":
        return out
    if profile.mentions and (why := text.mentions(content, texts, profile.mentions, is_moderator=False)):
        out.append(Decision("mentions", profile.mentions.action, why))
    if profile.media and (why := other.media(content, profile.media)):
        out.append(Decision("media", profile.media.action, why))
    return out


def _words_and_links(profile: Profile, texts: list[str], hrefs: list[str],
                     compiled_words: tuple[str, ...] | None) -> list[Decision]:
    """Size, banned words and links: what every text a room shows is held to."""
    size = sum(len(t) for t in texts) + sum(len(h) for h in hrefs)
    if size > profile.max_chars:
        # Not read further: a huge message costs nothing to refuse, and no rule is skipped by it.
        return [Decision("size", SIZE_ACTIONS, f"message trop long ({size} caractères > {profile.max_chars})")]
    out: list[Decision] = []
    if profile.banned_words and (why := text.banned_word(texts, profile.banned_words, compiled=compiled_words)):
        out.append(Decision("banned_words", profile.banned_words.action, why))
    if profile.links and (why := text.links(texts, hrefs, profile.links)):
        out.append(Decision("links", profile.links.action, why))
    return out


def strike_escalation(strikes_ms: Sequence[int], now_ms: int, profile: Profile) -> float | None:
    """Minutes of mute earned by repeated offences (strikes decay after the window), or None."""
    window = profile.strikes.window_hours * 3_600_000
    recent = [t for t in strikes_ms if now_ms - t <= window]
    return profile.strikes.mute_minutes if len(recent) >= profile.strikes.threshold else None
