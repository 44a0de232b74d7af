"""Name normalisation and deterministic ids, shared by the importers (pure)."""

from __future__ import annotations

import hashlib
import re
import unicodedata

_SPACES = re.compile(r"[\s\-'’]+")


def fold(text: str) -> str:
    """Upper-case ASCII with accents removed and separators collapsed: 'Éloïse-Marie ' -> 'ELOISE MARIE'."""
    decomposed = unicodedata.normalize("NFKD", text)
    ascii_only = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _SPACES.sub(" ", ascii_only).strip().upper()


def stable_id(namespace: str, *parts: str) -> str:
    """A deterministic id from folded parts: the same people get the same id on every import."""
    digest = hashlib.sha256("\x1f".join([namespace, *(fold(p) for p in parts)]).encode()).hexdigest()
    return f"{namespace}-{digest[:16]}"
