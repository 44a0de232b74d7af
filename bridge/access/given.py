"""A person's own name, as the directory gives it (pure): never taken for a title or an insult.

A parent named Maître, Principal or Salaud shows their name like anyone else: the names and
banned-words rules read a display name without the words of its holder's own name (the rest is
read as usual: "Marie Maître, directrice" is still refused). The snapshot keeps no names, only a
digest of (Matrix id, name form) per form, which confirms a name its holder shows and tells
nothing else (Synapse already keeps the names themselves, in its profiles).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from bridge.directory.model import Directory, Guardian, Staff
from bridge.policy.engine import Decision
from bridge.policy.texts import word_form

NAME_RULES = frozenset({"banned_words", "names"})
MAX_WORDS = 12  # a longer display name is read whole: the spans to try grow with its square


def _form(text: str) -> str:
    return " ".join(word_form(text).split())


def digest(user: str, form: str) -> str:
    return hashlib.sha256(f"{user}\0{form}".encode()).hexdigest()[:32]


def given_names(directory: Directory, identities: Mapping[str, str]) -> dict[str, frozenset[str]]:
    """Matrix id -> the digests of the names the directory gives that person (both orders)."""
    out: dict[str, set[str]] = {}
    people: list[Guardian | Staff] = [*directory.guardians.values(), *directory.staff.values()]
    for person in people:
        mxid = identities.get(person.id)
        if mxid is None:
            continue
        forms = {_form(f"{person.first_name} {person.last_name}"), _form(f"{person.last_name} {person.first_name}")}
        out.setdefault(mxid, set()).update(digest(mxid, f) for f in forms if f)
    return {user: frozenset(d) for user, d in out.items()}


def without_own_name(user: str, name: str, given: Iterable[str]) -> str | None:
    """The words of `name` outside the longest span that is its holder's own name (folded);
    None when it shows no own name."""
    known = frozenset(given)
    words = _form(name).split()
    if not known or not words or len(words) > MAX_WORDS:
        return None
    for size in range(len(words), 0, -1):
        for i in range(len(words) - size + 1):
            if digest(user, " ".join(words[i:i + size])) in known:
                return " ".join(words[:i] + words[i + size:])
    return None


def read_with_own_name(read: Callable[[dict[str, Any]], list[Decision]], content: Mapping[str, Any], user: str,
                       given: Iterable[str]) -> list[Decision]:
    """`read` (the engine's reading of a member event) with the holder's own name left out of
    what the names and banned-words rules read; every other rule reads the name as shown."""
    decisions = read(dict(content))
    name = content.get("displayname")
    if not isinstance(name, str) or not any(d.protection in NAME_RULES for d in decisions):
        return decisions
    rest = without_own_name(user, name, given)
    if rest is None:
        return decisions
    again = read({**content, "displayname": rest} if rest else
                 {k: v for k, v in content.items() if k != "displayname"})
    return ([d for d in decisions if d.protection not in NAME_RULES]
            + [d for d in again if d.protection in NAME_RULES])
