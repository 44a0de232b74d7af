"""Plan rendering for review (pure): a Terraform-like diff for people, JSON (stable) for tools."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from bridge.reconcile import actions as A
from bridge.reconcile.actions import Action, Plan
from bridge.reconcile.guards import Verdict

# + adds, - removes, ~ changes in place: the marks of `terraform plan`.
_MARK = {"create_room": "+", "create_space": "+", "replace_room": "-/+", "invite": "+", "add_to_space": "+",
         "link_to_space": "+", "unlist_from_space": "-",
         "provision_account": "+", "kick": "-", "erase_person": "-", "archive_room": "-"}


def _created(room: Any) -> dict[str, Any]:
    return {"name": room.name, "topic": room.topic, "template": room.template, "encrypted": room.encrypted,
            "join_rule": "invite", "guest_access": "forbidden", "history_visibility": room.history_visibility,
            "retention_ms": room.retention_ms, "space": room.is_space, "members": len(room.members),
            "power_levels": dict(room.power_levels)}


def change(action: Action) -> tuple[Any, Any]:
    """(before, after) of an action, as plain JSON values."""
    match action:
        case A.CreateRoom(room=room):
            return None, _created(room)
        case A.ReplaceRoom(room=room, old_room_id=old):
            return {"room_id": old, "usable": False}, _created(room)
        case A.SetState(before=before, after=after):
            return (dict(before) if before is not None else None), dict(after)
        case A.SetPowerLevels(keys=keys, before=before, after=after):
            return ({k: before.get(k) for k in keys}, {k: after.get(k) for k in keys})
        case A.Invite(before=before):
            return before, "invite"
        case A.Kick(before=before):
            return before, "leave"
        case A.TransferRoom(held_by=held_by, to=to, leaving=leaving):
            return {"owner": held_by}, {"owner": to, "leaving": list(leaving)}
        case A.AddToSpace(child_key=child):
            return None, {"child": child}
        case A.LinkToSpace(space_key=space):
            return None, {"parent": space}
        case A.UnlistFromSpace(child_id=child):
            return {"child": child}, None
        case A.ArchiveRoom():
            return ({"name": action.name_before, "topic": action.topic_before,
                     "events_default": action.power_before.get("events_default")},
                    {"name": action.name_after, "topic": action.topic_after,
                     "events_default": action.power_after.get("events_default")})
        case A.UnarchiveRoom():
            return {"archived": True}, {"archived": False}
        case A.ProvisionAccount():
            return None, {"display_name": action.display_name, "email": action.email,
                          "external_id": list(action.external_id) if action.external_id else None}
        case A.ErasePerson(deactivate=deactivate):
            return {"known": True}, {"known": False, "account_deactivated": deactivate}


def action_json(action: Action) -> dict[str, Any]:
    out: dict[str, Any] = {"type": action.kind}
    if isinstance(action, (A.ProvisionAccount, A.ErasePerson)):
        out["person_id"] = action.person_id
    else:
        out["room_key"] = action.room_key
    if (who := A.subject(action)) is not None:
        out["user_id"] = who
    if isinstance(action, A.SetState):
        out["event_type"] = action.event_type
    out["reason"] = action.reason
    out["before"], out["after"] = change(action)
    return out


def to_json(plan: Plan, verdict: Verdict | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"actions": [action_json(a) for a in plan.actions], "summary": plan.summary(),
                           "notes": list(plan.notes)}
    if verdict is not None:
        out["guard"] = {"ok": verdict.ok, "reasons": list(verdict.reasons)}
    return out


def _short(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def _users_diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
    parts = []
    for user in sorted(set(before) | set(after)):
        old, new = before.get(user), after.get(user)
        if old != new:
            parts.append(f"{user} {old if old is not None else '∅'} -> {new if new is not None else '∅'}")
    return "users: " + ", ".join(parts)


def describe(action: Action) -> str:
    """One line's detail: what the action replaces and writes."""
    before, after = change(action)
    match action:
        case A.CreateRoom(room=room) | A.ReplaceRoom(room=room):
            enc = "encrypted" if room.encrypted else "unencrypted"
            return f"«{room.name}» ({enc}, {len(room.members)} members)"
        case A.SetPowerLevels(keys=keys, before=b, after=a):
            parts = [_users_diff(b.get("users") or {}, a.get("users") or {}) if k == "users"
                     else f"{k}: {_short(b.get(k))} -> {_short(a.get(k))}" for k in keys]
            return "; ".join(parts)
        case A.Invite() | A.Kick() | A.ProvisionAccount() | A.ErasePerson():
            return f"{A.subject(action)} ({before or '∅'} -> {after if isinstance(after, str) else 'set'})"
        case _:
            return f"{_short(before)} -> {_short(after)}"


def to_text(plan: Plan, verdict: Verdict | None = None, *, limit: int = 200) -> str:
    lines: list[str] = []
    if plan.is_empty():
        lines.append("Plan: nothing to do; the homeserver matches the directory.")
    else:
        summary = ", ".join(f"{n} {t}" for t, n in plan.summary().items())
        lines.append(f"Plan: {len(plan.actions)} actions ({summary})")
        for action in plan.actions[:limit]:
            mark = _MARK.get(action.kind, "~")
            lines.append(f"  {mark} {action.kind:<17} {A.target(action)}: {describe(action)} — {action.reason}")
        if len(plan.actions) > limit > 0:
            lines.append(f"  … {len(plan.actions) - limit} more (use --format json)")
    lines.extend(f"note: {note}" for note in plan.notes)
    if verdict is not None and verdict.reasons:
        lines.append("guard: " + ("REFUSED" if not verdict.ok else "passed with override"))
        lines.extend(f"  - {r}" for r in verdict.reasons)
        if not verdict.ok:
            lines.append("  re-run with --allow-mass-removal if this is really intended")
    return "\n".join(lines)
