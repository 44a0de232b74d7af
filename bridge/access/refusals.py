"""What the Synapse module refused, as it tells the bridge (pure): one format, read strictly on both sides.

Why: a refusal by the homeserver (an invite to another family, a join, a room, a name) is an
action of the bridge's rules like a redaction; it belongs in the bridge's HMAC audit, not only
in Synapse's log. The module sends refusals in batches to the bridge's appservice port
(`PUT /_ent-bridge/v1/refusals/{batch}`, the registration's hs_token), the bridge records them
with the refusal's id as once-key: a batch sent again after a lost answer is on record once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

KINDS = frozenset({"invite", "join", "create_room", "state", "name", "held"})  # held: shown without its text
BATCH_MAX = 200  # refusals in one request
REASON_MAX = 500
ID_RE = re.compile(r"[0-9a-f]{16,64}")
_FIELDS = {"id": True, "ts": True, "kind": True, "sender": True, "reason": True,  # required?
           "room": False, "target": False, "event_type": False}
PATH = "/_ent-bridge/v1/refusals/"


@dataclass(frozen=True)
class Refusal:
    """One refusal: who tried what, where, on whom, and the rule's answer (never a message)."""

    id: str
    ts: int
    kind: str
    sender: str
    reason: str
    room: str | None = None
    target: str | None = None  # the invitee
    event_type: str | None = None  # a refused state event's type

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def _field(raw: Mapping[str, Any], key: str, where: str) -> Any:
    value = raw.get(key)
    if key == "ts":
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{where}.ts: a time in milliseconds")
        return value
    if value is None and not _FIELDS[key]:
        return None
    if not isinstance(value, str) or not value or len(value) > (REASON_MAX if key == "reason" else 255):
        raise ValueError(f"{where}.{key}: a string of 1 to {REASON_MAX if key == 'reason' else 255} characters")
    return value


def parse_one(raw: Any, where: str = "refusal") -> Refusal:
    """A refusal from its JSON; ValueError naming the key otherwise."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: an object")
    unknown = set(raw) - set(_FIELDS)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    values = {key: _field(raw, key, where) for key in _FIELDS}
    if not ID_RE.fullmatch(values["id"]):
        raise ValueError(f"{where}.id: 16 to 64 lowercase hex digits")
    if values["kind"] not in KINDS:
        raise ValueError(f"{where}.kind: one of {', '.join(sorted(KINDS))}")
    for key in ("sender", "target"):
        if values[key] is not None and not values[key].startswith("@"):
            raise ValueError(f"{where}.{key}: a Matrix user id")
    return Refusal(**values)


def parse_batch(body: Any) -> list[Refusal]:
    """The refusals of one request: {"refusals": [...]} (at most BATCH_MAX)."""
    if not isinstance(body, Mapping) or set(body) != {"refusals"} or not isinstance(body["refusals"], list):
        raise ValueError('the body is {"refusals": [...]}')
    items = body["refusals"]
    if len(items) > BATCH_MAX:
        raise ValueError(f"refusals: at most {BATCH_MAX} in one request")
    return [parse_one(raw, f"refusals[{n}]") for n, raw in enumerate(items)]


def audit_entry(refusal: Refusal, pseudonym: Callable[[str], str]) -> dict[str, Any]:
    """The keyword arguments of `AuditLog.record` for a refusal: people as pseudonyms only."""
    detail: dict[str, Any] = {}
    if refusal.target is not None:
        detail["target"] = pseudonym(refusal.target)
    if refusal.event_type is not None:
        detail["event_type"] = refusal.event_type
    return {"actor": "synapse-module", "action": f"access_refused_{refusal.kind}", "reason": refusal.reason,
            "room": refusal.room, "subject": refusal.sender, "detail": detail or None, "now_ms": refusal.ts,
            "once": f"refusal:{refusal.id}"}
