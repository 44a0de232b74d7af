"""Names and topics held to the room's moderation at the homeserver (pure): what the module refuses.

The bridge takes an insulting or posing display name back once it is shown (it redacts the
member event), but a muted parent may rename again and again (a member's own membership needs no
power), and a global profile name stays in the user directory. The module refuses them before
anyone sees them, with the very rules the bridge applies: each managed template's moderation
profile is published in the access snapshot (`publish`), and read back by the module (`restore`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bridge.access.given import read_with_own_name
from bridge.policy.engine import Decision, read_content
from bridge.policy.model import BannedWords, Links, Names, Policies, Profile
from bridge.policy.protections.text import compile_words
from bridge.policy.shown_state import MEMBER, SHOWN_KEYS, SHOWN_STATE, room_staff
from bridge.rooms.templates import RoomTemplate

_PARTS: dict[str, type[BannedWords | Links | Names]] = {
    "banned_words": BannedWords, "links": Links, "names": Names}


def publish(templates: Mapping[str, RoomTemplate], policies: Policies) -> dict[str, dict[str, Any]]:
    """Template name -> what its moderation profile holds shown state to (JSON-ready)."""
    out: dict[str, dict[str, Any]] = {}
    for name, template in templates.items():
        profile = policies.profiles.get(template.moderation or "")
        if profile is None:
            continue
        rules: dict[str, Any] = {"profile": profile.name, "exempt_power": profile.exempt_power,
                                 "max_chars": profile.max_chars}
        for part in _PARTS:
            value = getattr(profile, part)
            rules[part] = None if value is None else dataclasses.asdict(value)
        out[name] = rules
    return out


@dataclass(frozen=True)
class StateRules:
    """A published profile, read back: the engine's profile and its words, compiled once."""

    profile: Profile
    compiled_words: tuple[str, ...] | None

    @property
    def exempt_power(self) -> int:
        return self.profile.exempt_power


def restore(rules: Mapping[str, Any]) -> StateRules:
    """The inverse of `publish` for one template (raises ValueError on a foreign shape)."""
    try:
        parts = {part: None if rules.get(part) is None else
                 cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in rules[part].items()})
                 for part, cls in _PARTS.items()}
        profile = Profile(str(rules["profile"]), exempt_power=int(rules["exempt_power"]),
                          max_chars=int(rules["max_chars"]), **parts)  # type: ignore[arg-type]
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"published moderation rules of an unknown shape ({exc})") from exc
    words = profile.banned_words
    return StateRules(profile, compile_words(words.words) if words else None)


@dataclass(frozen=True)
class Verdict:
    """None of these: allowed as sent. `refuse`: the reason the client shows; `content`: the
    event is allowed with this content instead (what it showed taken out)."""

    refuse: str | None = None
    content: dict[str, Any] | None = None
    protections: tuple[str, ...] = ()


def _why(protections: Iterable[str], reasons: Iterable[str]) -> str:
    return (f"refusé par la charte de l'établissement ({'; '.join(reasons)}) / "
            f"refused by the school's rules ({', '.join(protections)})")


def check_state(rules: StateRules, sender: str, event_type: str, state_key: str | None, content: Mapping[str, Any],
                state: Iterable[Mapping[str, Any]], *, given: Iterable[str] = ()) -> Verdict | None:
    """A state event a member sends in a managed room, against the room's current `state` (event
    dicts): None when nothing it shows breaks the rules, or when its sender is exempt.

    A member's rename (join to join) is refused: the client says why and the old name stays. Any
    other membership (accepting an invitation under an offending global name, leaving with an
    insult as the reason) goes through without what it would show: nobody is kept out of a room
    or in one by their name. A room's name or topic is refused. given: the digests of the
    sender's own names (`access.given`): their own name is not taken for a title or an insult."""
    if event_type not in SHOWN_STATE:
        return None
    state = list(state)
    exempt, staff_names = room_staff(state, rules.exempt_power)
    if sender in exempt:
        return None
    def read(shown: dict[str, Any]) -> list[Decision]:
        return read_content(rules.profile, shown, rules.compiled_words, kind=event_type, staff_names=staff_names)

    decisions = read_with_own_name(read, content, sender, given) if event_type == MEMBER else read(dict(content))
    if not decisions:
        return None
    protections = tuple(d.protection for d in decisions)
    why = _why(protections, (d.reason for d in decisions))
    if event_type != MEMBER:
        return Verdict(refuse=why, protections=protections)
    before = next((ev.get("content") or {} for ev in state
                   if ev.get("type") == MEMBER and ev.get("state_key") == state_key), {})
    if state_key == sender and content.get("membership") == "join" and before.get("membership") == "join":
        return Verdict(refuse=why, protections=protections)
    shown = set(SHOWN_KEYS[MEMBER])
    return Verdict(content={k: v for k, v in content.items() if k not in shown}, protections=protections)


def global_name_refused(published: Iterable[StateRules], name: object, *, user: str = "",
                        given: Iterable[str] = ()) -> bool:
    """A profile name that some managed room's rules would not take from a member: the user
    directory shows global names, and a name refused in the rooms is not shown in a search.
    user, given: whose name it is, and the digests of their own names."""
    if not isinstance(name, str) or not name:
        return False
    own = frozenset(given)
    return any(read_with_own_name(functools.partial(read_content, r.profile, compiled_words=r.compiled_words,
                                                    kind=MEMBER), {"displayname": name}, user, own)
               for r in published)
