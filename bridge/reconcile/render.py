"""Plan rendering for review: text for people, JSON (documented, stable) for tools."""

from __future__ import annotations

from typing import Any

from bridge.reconcile.actions import Plan
from bridge.reconcile.guards import Verdict


def to_json(plan: Plan, verdict: Verdict | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"actions": [a.to_json() for a in plan.actions], "summary": plan.summary(),
                           "notes": list(plan.notes)}
    if verdict is not None:
        out["guard"] = {"ok": verdict.ok, "reasons": list(verdict.reasons)}
    return out


def to_text(plan: Plan, verdict: Verdict | None = None, *, limit: int = 200) -> str:
    lines: list[str] = []
    if plan.is_empty():
        lines.append("Plan: nothing to do; the homeserver matches the directory.")
    else:
        summary = ", ".join(f"{n} {t}" for t, n in plan.summary().items())
        lines.append(f"Plan: {len(plan.actions)} actions ({summary})")
        for action in plan.actions[:limit]:
            room = plan.desired.get(action.room_key)
            label = f" «{room.name}»" if room else ""
            who = f" {action.user_id}" if action.user_id else ""
            lines.append(f"  {action.type:<16} {action.room_key}{label}{who}: {action.reason}")
        if len(plan.actions) > limit > 0:
            lines.append(f"  … {len(plan.actions) - limit} more (use --format json)")
    for note in plan.notes:
        lines.append(f"note: {note}")
    if verdict is not None and verdict.reasons:
        lines.append("guard: " + ("REFUSED" if not verdict.ok else "passed with override"))
        lines.extend(f"  - {r}" for r in verdict.reasons)
        if not verdict.ok:
            lines.append("  re-run with --allow-mass-removal if this is really intended")
    return "\n".join(lines)
