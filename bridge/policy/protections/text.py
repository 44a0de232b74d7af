"""Text protections over every text a message shows: banned words, links, mentions (pure, linear)."""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Any
from urllib.parse import urlsplit

import tldextract

from bridge.policy import texts as text_forms
from bridge.policy.model import BannedWords, Links, Mentions, Names
from bridge.policy.texts import normalise, word_form

_EDGE = "<>()[]{}\"'.,;:!?«»“”‘’"
_DOTS = str.maketrans({"\u3002": ".", "\uff61": "."})  # the ideographic full stops, a dot in a domain name
# The Public Suffix List as the package ships it: no download, ever (suffix_list_urls=()).
_PSL = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


def warm() -> None:
    """Build the lookup tables now, not in the first message's time: the suffix list's tree
    (tldextract builds it at the first lookup: tens of milliseconds and ~17,000 objects) and the
    text folding's strip table."""
    _PSL("ent-bridge.example.fr")
    text_forms.warm()


# A banned word is also banned in its plural and feminine forms ("connards", "abrutie", "salopes"):
# French inflects, and a word list can't be asked to spell out every form.
INFLECTIONS = ("", "s", "e", "es")


def _single(form: str) -> bool:
    """A normal form of one word (' conard '), not of a phrase (' fils de pute ')."""
    return form.count(" ") == 2


def compile_words(words: tuple[str, ...]) -> tuple[str, ...]:
    """The normal forms looked for: each phrase as written, each single word with its inflections."""
    forms: set[str] = set()
    for w in words:
        base = word_form(w)
        if not base.strip():
            continue
        forms.update(word_form(w + ending) for ending in INFLECTIONS) if _single(base) else forms.add(base)
    return tuple(sorted(forms))


# A banned word of this many letters or more is also found split in two by a space ("con nard");
# shorter ones are not, as short words side by side are everyday French ("il a pu te voir").
SPLIT_MIN = 6
Halves = dict[str, tuple[str, ...]]  # a word's first half -> what the text shows when it is split there


@functools.lru_cache(maxsize=64)
def _split(compiled: tuple[str, ...]) -> tuple[frozenset[str], tuple[str, ...], Halves]:
    """The single words (looked up among a text's words) apart from the phrases (searched for),
    and each single word's split forms, by first half: "conard" split after "con" shows as
    ' con ard ' or, the n written twice, ' con nard ' (the normal form squeezed it once)."""
    words = frozenset(e[1:-1] for e in compiled if _single(e))
    halves: dict[str, set[str]] = {}
    for w in words:
        if len(w) >= SPLIT_MIN:
            for k in range(2, len(w) - 1):  # both halves of two letters or more
                head, tail = w[:k], w[k:]
                halves.setdefault(head, set()).update({f" {head} {tail} ", f" {head} {head[-1]}{tail} "})
    return words, tuple(e for e in compiled if not _single(e)), {h: tuple(sorted(f)) for h, f in halves.items()}


def banned_word(texts: list[str], settings: BannedWords, *, compiled: tuple[str, ...] | None = None) -> str | None:
    normal = " ".join(normalise(t) for t in texts)
    words, phrases, halves = _split(compiled if compiled is not None else compile_words(settings.words))
    # One set of the text's words for all the single words: a search of the whole text per word
    # form would cost more than every other step at the size limit. Split words: the text's
    # words that begin a banned word, found in the same C pass, and only their split forms
    # searched for (most texts have none, and no per-word Python loop runs over a long text).
    tokens = normal.split()
    if not words.isdisjoint(tokens) or any(p in normal for p in phrases):
        return "langage contraire à la charte"
    if any(form in normal for head in halves.keys() & tokens for form in halves[head]):
        return "langage contraire à la charte"
    return None


@functools.lru_cache(maxsize=16)
def _reserved(words: tuple[str, ...]) -> tuple[BannedWords, tuple[str, ...]]:
    return BannedWords(words), compile_words(words)


def staff_name(name: str) -> str:
    """The form in which two display names are the same name ("Mme Durand", "MME DURΑND")."""
    return word_form(name).strip()


def impersonation(name: str, settings: Names, staff_names: frozenset[str]) -> str | None:
    """A member's display name that poses as the school's staff: a title of theirs, or the name
    one of the room's moderators shows (`staff_names`, each in `staff_name` form)."""
    rule, compiled = _reserved(settings.reserved)
    if banned_word([name], rule, compiled=compiled):
        return "nom affiché réservé à l'équipe de l'établissement"
    if staff_name(name) in staff_names:
        return "nom affiché d'un membre de l'équipe"
    return None


def hosts(texts: list[str], hrefs: list[str]) -> list[str]:
    """Hosts of the links a message shows or points to: URLs with a scheme, `www.` names, and bare
    domains whose suffix is a public one (bit.ly/abc, evil.ru). One pass over whitespace-separated
    tokens: linear, whatever the input."""
    found: list[str] = []
    for raw in [w for t in texts for w in t.split()] + hrefs:
        token = raw.strip(_EDGE)
        if not token.isascii():  # 'ｅｖｉｌ．ｒｕ', 'evil。ru': what a browser reads as a name (UTS #46)
            token = unicodedata.normalize("NFKC", token).translate(_DOTS)
        if "://" in token:
            host = urlsplit(token).hostname or ""
        elif "." in token:
            host = token.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0].rsplit("@", 1)[-1].lower()
            if len(host) > 253:  # no domain name is longer: not looked up (a lookup of 24 KB costs a millisecond)
                continue
            parts = _PSL(host)
            if not (parts.domain and parts.suffix):
                continue
        else:
            continue
        if host:
            found.append(host.lower().rstrip("."))
    return found


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


# What an HTML link may be besides a web address: an e-mail address, a Matrix link, a section of
# the message. Anything else (javascript:, data:, file:, vbscript:) runs or opens something on
# click, whatever a client's sanitiser may or may not keep.
# (A picture's mxc:// is no exception to the allow-list below: an inline picture skips the media
# rule's file types, and a school may not have listed its homeserver's domain.)
_SAFE_SCHEMES = frozenset({"http", "https", "mailto", "matrix", "mxc"})
_SCHEME = re.compile(r"([a-z][a-z0-9+.-]*):")
_URL_BLANKS = str.maketrans({c: None for c in range(0x21)} | {0x7F: None})


def _scheme(href: str) -> str | None:
    """The scheme a browser reads in an href: blanks and control characters anywhere are skipped
    (" Java\tScript:" is javascript:), case folded; None for a relative link."""
    m = _SCHEME.match(href.translate(_URL_BLANKS).lower())
    return m.group(1) if m else None


def links(texts: list[str], hrefs: list[str], settings: Links) -> str | None:
    for href in hrefs:
        if (scheme := _scheme(href)) is not None and scheme not in _SAFE_SCHEMES:
            return f"lien d'un type non autorisé ({scheme}:)"
    for host in hosts(texts, hrefs):
        if not settings.allow_domains or not _domain_allowed(host, settings.allow_domains):
            return f"lien vers un site non autorisé ({host})"
    return None


def mentions(content: dict[str, Any], texts: list[str], settings: Mentions, *, is_moderator: bool) -> str | None:
    m = content.get("m.mentions") or {}  # its shape was checked with the texts
    room = bool(m.get("room")) or any("@room" in t for t in texts)
    if room and settings.room_mention == "moderators" and not is_moderator:
        return "@room est réservé aux modérateurs"
    users = set(m.get("user_ids") or [])
    if len(users) > settings.max_mentions:
        return f"trop de mentions ({len(users)} > {settings.max_mentions})"
    return None
