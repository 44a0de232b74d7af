"""Directory person -> Matrix user id (pure): persisted, explicit, by e-mail, or by template."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from bridge.directory.normalise import fold

_INVALID = re.compile(r"[^a-z0-9._=\-]+")


@dataclass(frozen=True)
class Person:
    id: str
    first_name: str
    last_name: str
    email: str | None = None


@dataclass(frozen=True)
class IdentityRules:
    server_name: str
    localpart_template: str = "{first}.{last}"
    explicit: Mapping[str, str] = field(default_factory=dict)  # person id -> mxid (mapping file)
    reserved_prefix: str = "ent-bridge_"  # the appservice's exclusive namespace


def localpart(template: str, person: Person) -> str:
    first = fold(person.first_name).lower().replace(" ", "-")
    last = fold(person.last_name).lower().replace(" ", "-")
    raw = template.format(first=first, last=last, id=fold(person.id).lower())
    return _INVALID.sub("", raw).strip("._-=") or "user"


def _suffix(person_id: str) -> str:
    return hashlib.sha256(person_id.encode()).hexdigest()[:4]


def map_identities(persons: list[Person], *, rules: IdentityRules, known: Mapping[str, str],
                   by_email: Mapping[str, str]) -> dict[str, str]:
    """Assign each person a Matrix id.

    Priority: an id the bridge already used for that person (`known`, from the store: people
    keep their account), the explicit mapping file, an existing account with the same e-mail
    (`by_email`, looked up through the admin API), then the localpart template. Template
    homonyms are told apart by a short hash of the person id, processed in id order, so the
    result does not depend on file order.
    """
    out: dict[str, str] = {}
    taken: set[str] = set(known.values()) | set(rules.explicit.values())
    for person in sorted(persons, key=lambda p: p.id):
        mxid = known.get(person.id) or rules.explicit.get(person.id)
        if mxid is None and person.email:
            mxid = by_email.get(person.email.lower())
        if mxid is None:
            base = localpart(rules.localpart_template, person)
            if base.startswith(rules.reserved_prefix):
                base = "u." + base
            candidate = f"@{base}:{rules.server_name}"
            if candidate in taken:
                candidate = f"@{base}.{_suffix(person.id)}:{rules.server_name}"
            mxid = candidate
        out[person.id] = mxid
        taken.add(mxid)
    return out
