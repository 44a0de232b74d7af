"""Moderation policy model (pure dataclasses); the JSON Schema for editors is derived from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import time

ACTIONS = ("redact", "warn", "mute", "kick", "report", "notice")


@dataclass(frozen=True)
class BannedWords:
    words: tuple[str, ...]
    action: tuple[str, ...] = ("redact", "warn")


@dataclass(frozen=True)
class Flood:
    max_messages: int = 8
    per_seconds: int = 10
    action: tuple[str, ...] = ("mute",)
    mute_minutes: float = 60.0


@dataclass(frozen=True)
class Media:
    allowed_mime: tuple[str, ...] = ("image/jpeg", "image/png", "application/pdf")
    max_size_mb: float = 10.0
    action: tuple[str, ...] = ("redact", "warn")


@dataclass(frozen=True)
class Links:
    allow_domains: tuple[str, ...] = ()  # empty: no links at all
    action: tuple[str, ...] = ("redact", "warn")


@dataclass(frozen=True)
class Mentions:
    room_mention: str = "moderators"  # who may use @room: moderators | everyone
    max_mentions: int = 5
    action: tuple[str, ...] = ("redact", "warn")


@dataclass(frozen=True)
class QuietHours:
    start: time = time(20, 0)
    end: time = time(7, 30)
    weekends: bool = True
    timezone: str = "Europe/Paris"
    action: tuple[str, ...] = ("notice",)


@dataclass(frozen=True)
class FanOut:
    """One account posting in many rooms within minutes: a hijacked account writing to every
    family (March 2024). It is muted in every room of the school at once, and reported."""

    max_rooms: int = 4  # members (legal guardians): more rooms than this within the window
    max_rooms_moderators: int = 15  # teachers and directors do write to several classes
    window_minutes: float = 10.0
    action: tuple[str, ...] = ("mute", "report")
    mute_minutes: float = 1440.0


@dataclass(frozen=True)
class Names:
    """A member's display name in a room may not pose as the school's staff: no title the staff
    go by (in any disguise, plural or feminine), and not the name a moderator of the room shows."""

    reserved: tuple[str, ...] = ("directeur", "directrice", "professeur", "prof", "enseignant", "maitre",
                                 "maitresse", "instituteur", "institutrice", "principal", "proviseur", "cpe",
                                 "administrateur", "administration", "moderateur", "moderatrice", "secretariat",
                                 "academie", "rectorat", "ent", "ent-bridge")
    action: tuple[str, ...] = ("redact", "warn", "report")


@dataclass(frozen=True)
class Strikes:
    threshold: int = 3
    window_hours: float = 24.0
    mute_minutes: float = 60.0


@dataclass(frozen=True)
class Profile:
    name: str
    exempt_power: int = 50  # moderators and admins are exempt
    content_inspection: bool = True
    max_chars: int = 20_000  # longer messages are taken down unread (every text they show counted)
    banned_words: BannedWords | None = None
    flood: Flood | None = None
    media: Media | None = None
    links: Links | None = None
    mentions: Mentions | None = None
    quiet_hours: QuietHours | None = None
    fan_out: FanOut | None = None
    names: Names | None = None
    strikes: Strikes = field(default_factory=Strikes)


GUARDIAN_TARGETS = ("teachers", "director", "school_staff")
PAUSE_WRITERS = {"moderators": 50, "admins": 100}  # the power level a pause sets as events_default


@dataclass(frozen=True)
class AccessPolicy:
    """Reach = find in the user directory, open a DM, invite into a room one created.

    Staff always reach their school's staff and the guardians of the pupils they teach; a
    director reaches every guardian of the school."""

    # Whom a legal guardian reaches among the staff of their own children's schools.
    guardians_reach: tuple[str, ...] = ("teachers", "director")
    # Other guardians of the same class (off by default: e.g. for elected parent representatives).
    guardians_reach_guardians: bool = False
    # The other legal guardian(s) of the same child.
    co_guardians_reach: bool = True
    # Matrix ids held to none of these rules (the district's administrators): they reach anyone
    # and anyone reaches them.
    unrestricted: tuple[str, ...] = ()
    # Who still writes while the school's messaging is paused (!pause): moderators (the teaching
    # team and the director) or admins (the director alone).
    pause_writers: str = "moderators"


@dataclass(frozen=True)
class Announcements:
    """Announcements that ask families to confirm they read them (policies/announcements.yaml)."""

    marker: str = "!annonce"  # a message starting with this, by staff, in a class or school room
    confirm_reactions: tuple[str, ...] = ("✅", "👍", "✔️")
    confirm_words: tuple[str, ...] = ("lu", "vu", "ok", "reçu", "bien reçu", "read")
    remind_after_hours: float = 48.0


@dataclass(frozen=True)
class Policies:
    profiles: dict[str, Profile]
    source: str = ""
    access: AccessPolicy = field(default_factory=AccessPolicy)
    announcements: Announcements = field(default_factory=Announcements)
