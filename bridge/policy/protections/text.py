"""Text protections: banned words (case, accents, simple leetspeak, word boundaries), links, mentions."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from bridge.directory.normalise import fold
from bridge.policy.model import BannedWords, Links, Mentions

_LEET = str.maketrans({"4": "a", "@": "a", "3": "e", "1": "i", "!": "i", "0": "o", "5": "s", "$": "s", "7": "t"})
_TOKEN = re.compile(r"[a-z0-9]+")
_REPEAT = re.compile(r"(.)\1+")
_URL = re.compile(r"(?i)\b(?:https?://|www\.)[^\s<>\"']+|\b[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?:fr|com|net|org|io|be|ch|eu|info)\b(?:/[^\s]*)?")


def normalise(text: str) -> str:
    """' conn4rd!! ' -> ' conard ': folded, de-leeted, letters runs collapsed, spaced tokens."""
    folded = fold(text.translate(_LEET)).lower().translate(_LEET)
    tokens = [_REPEAT.sub(r"\1", t) for t in _TOKEN.findall(folded)]
    return " " + " ".join(tokens) + " "


def compile_words(words: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sorted({normalise(w) for w in words if normalise(w).strip()}))


def banned_word(body: str, settings: BannedWords, *, compiled: tuple[str, ...] | None = None) -> str | None:
    text = normalise(body)
    for expr in compiled if compiled is not None else compile_words(settings.words):
        if expr in text:
            return "langage contraire à la charte"
    return None


def _domain_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    """A host is allowed when it, or a domain it belongs to, matches a pattern; '*' stands for
    one label part ('ac-*.fr' allows www.ac-lyon.fr, not ac-lyon.fr.evil.com)."""
    labels = host.lower().rstrip(".").split(".")
    suffixes = [".".join(labels[i:]) for i in range(len(labels))]
    for allowed_pattern in allowed:
        pattern = allowed_pattern.lower().removeprefix("*.")
        regex = re.escape(pattern).replace(r"\*", "[a-z0-9-]+")
        if any(re.fullmatch(regex, s) for s in suffixes):
            return True
    return False


def links(body: str, settings: Links) -> str | None:
    for match in _URL.findall(body):
        url = match if "://" in match else "http://" + match
        host = urlsplit(url).hostname or ""
        if not settings.allow_domains or not _domain_allowed(host, settings.allow_domains):
            return f"lien vers un site non autorisé ({host})"
    return None


def mentions(content: dict[str, Any], settings: Mentions, *, is_moderator: bool) -> str | None:
    body = str(content.get("body", ""))
    m = content.get("m.mentions") or {}
    room = bool(m.get("room")) or "@room" in body
    if room and settings.room_mention == "moderators" and not is_moderator:
        return "@room est réservé aux modérateurs"
    users = set(m.get("user_ids") or [])
    if len(users) > settings.max_mentions:
        return f"trop de mentions ({len(users)} > {settings.max_mentions})"
    return None
