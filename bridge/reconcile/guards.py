"""Safety checks on a plan (pure): refuse mass removals, vanishing schools or classes, a shrunken directory.

A truncated export, or a sync given only part of the sources (one school of two, the AAF folder
without the BE1D one), must not empty rooms: whatever takes people out of rooms is weighed
(kicks, erasures, and archiving, which makes a room read-only at once and empties it later).
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.reconcile.actions import ArchiveRoom, Plan, lasting_key
from bridge.reconcile.observed import ObservedState
from bridge.rooms.desired import school_of_key


@dataclass(frozen=True)
class Limits:
    max_removal_share: float = 0.05
    max_removals: int = 200
    max_directory_shrink: float = 0.10
    # Below this many removals the share rule doesn't apply: in a small school one family
    # leaving is already more than 5 % of the members.
    min_removals_for_share: int = 10
    # Rooms disappearing for good (no successor next school year): share of the managed rooms,
    # from this many rooms on.
    max_vanishing_share: float = 0.10
    min_vanishing_for_share: int = 5


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reasons: tuple[str, ...] = ()


def _names(items: list[str], limit: int = 10) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _vanishing(plan: Plan, observed: ObservedState, limits: Limits) -> list[str]:
    """Schools and classes the plan would archive with nothing to take over."""
    reasons: list[str] = []
    gone = [a.room_key for a in plan.actions
            if isinstance(a, ArchiveRoom) and a.successor is None]
    if not gone:
        return reasons
    wanted_schools = {school_of_key(k) for k in plan.desired}
    schools = sorted({s for k in gone if (s := school_of_key(k)) and s not in wanted_schools})
    if schools:
        reasons.append(f"every room of {len(schools)} school(s) would be archived: {_names(schools)} "
                       "(a source missing from this sync?)")
    classes = sorted({lasting_key(k) for k in gone if lasting_key(k) != k})
    if classes:
        reasons.append(f"{len(classes)} class room(s) would be archived with no room for the class next: "
                       f"{_names(classes)}")
    active = sum(1 for r in observed.rooms.values() if not r.archived)
    if active and len(gone) >= limits.min_vanishing_for_share and len(gone) > limits.max_vanishing_share * active:
        reasons.append(f"{len(gone)} of {active} managed rooms would be archived ({len(gone) / active:.0%}, "
                       f"limit {limits.max_vanishing_share:.0%})")
    return reasons


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
    reasons += _vanishing(plan, observed, limits)
    if previous_directory_size and directory_size < (1 - limits.max_directory_shrink) * previous_directory_size:
        shrink = 1 - directory_size / previous_directory_size
        reasons.append(f"the directory shrank by {shrink:.0%} since the last import ({previous_directory_size} -> "
                       f"{directory_size} people; limit {limits.max_directory_shrink:.0%}): truncated export?")
    if reasons and allow_mass_removal:
        return Verdict(True, tuple(f"overridden: {r}" for r in reasons))
    return Verdict(not reasons, tuple(reasons))
