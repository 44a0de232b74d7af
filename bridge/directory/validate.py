"""Checks on an imported directory: counts and warnings, each pointing at file and line (pure)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from bridge.directory.model import Directory, Warning
from bridge.directory.normalise import fold


def validate(d: Directory) -> list[Warning]:
    out: list[Warning] = []

    def warn(code: str, message: str, pid: str | None = None) -> None:
        file, line = d.origins.get(pid, (None, None)) if pid else (None, None)
        out.append(Warning(code, message, file, line))

    for pupil in sorted(d.pupils.values(), key=lambda p: p.id):
        if not pupil.guardians:
            warn("pupil_without_guardian", f"pupil {pupil.id} has no legal guardian", pupil.id)
        missing = [g for g in pupil.guardians if g not in d.guardians]
        if missing:
            warn("guardian_missing", f"pupil {pupil.id}: guardian(s) {', '.join(missing)} not in the export",
                 pupil.id)
        if not pupil.classes:
            warn("pupil_without_class", f"pupil {pupil.id} is in no known class", pupil.id)
    for person in sorted(d.staff.values(), key=lambda s: s.id):
        if person.teacher and not person.classes:
            warn("teacher_without_class", f"teacher {person.id} teaches no known class", person.id)
    taught = d.teachers_of_class()
    out.extend(Warning("class_without_teacher", f"class {ref} has no teacher")
               for ref in sorted(d.classes) if ref not in taught)
    names = Counter((p.classes[0].uai if p.classes else "", fold(p.first_name), fold(p.last_name))
                    for p in d.pupils.values())
    for (uai, first, last), n in sorted(names.items()):
        if n > 1:
            out.append(Warning("homonym", f"{n} pupils named {first.title()} {last[:1]}. in {uai}"))
    return out


def report(d: Directory, warnings: list[Warning]) -> dict[str, Any]:
    """The stable JSON shape of `ent-bridge annuaire check --format json` (docs/directory.md)."""

    def counts(uai: str | None) -> dict[str, int]:
        def mine(refs: tuple[Any, ...] | list[Any]) -> bool:
            return uai is None or any(r.uai == uai for r in refs)

        pupils = [p for p in d.pupils.values() if mine(p.classes)]
        return {
            "classes": sum(1 for c in d.classes if uai is None or c.uai == uai),
            "pupils": len(pupils),
            "guardians": len({g for p in pupils for g in p.guardians if g in d.guardians}),
            "teachers": sum(1 for s in d.staff.values()
                            if s.teacher and (uai is None or uai in s.schools)),
            "staff": sum(1 for s in d.staff.values() if uai is None or uai in s.schools),
        }

    return {
        "schools": len(d.schools),
        **counts(None),
        "warnings": [{"code": w.code, "file": w.file, "line": w.line, "message": w.message}
                     for w in warnings],
        "warning_counts": dict(sorted(Counter(w.code for w in warnings).items())),
        "by_school": {uai: {"name": s.name, **counts(uai)} for uai, s in sorted(d.schools.items())},
    }
