"""Safety checks on a plan (pure): refuse mass removals and a suddenly shrunken directory."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.reconcile.actions import Plan
from bridge.reconcile.observed import ObservedState


@dataclass(frozen=True)
class Limits:
    max_removal_share: float = 0.05
    max_removals: int = 200
    max_directory_shrink: float = 0.10
    # Below this many removals the share rule doesn't apply: in a small school one family
    # leaving is already more than 5 % of the members.
    min_removals_for_share: int = 10


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reasons: tuple[str, ...] = ()


def check(plan: Plan, observed: ObservedState, *, limits: Limits, directory_size: int,
          previous_directory_size: int | None, allow_mass_removal: bool = False) -> Verdict:
    reasons: list[str] = []
    removals = plan.removals
    current = sum(len(r.current()) for r in observed.rooms.values())
    if removals > limits.max_removals:
        reasons.append(f"{removals} removals exceed the limit of {limits.max_removals} per run")
    if current and removals >= limits.min_removals_for_share and removals > limits.max_removal_share * current:
        reasons.append(f"{removals} removals are {removals / current:.1%} of the {current} current members "
                       f"(limit {limits.max_removal_share:.0%})")
    if previous_directory_size and directory_size < (1 - limits.max_directory_shrink) * previous_directory_size:
        shrink = 1 - directory_size / previous_directory_size
        reasons.append(f"the directory shrank by {shrink:.0%} since the last import ({previous_directory_size} -> "
                       f"{directory_size} people; limit {limits.max_directory_shrink:.0%}): truncated export?")
    if reasons and allow_mass_removal:
        return Verdict(True, tuple(f"overridden: {r}" for r in reasons))
    return Verdict(not reasons, tuple(reasons))
