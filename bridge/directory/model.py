"""Pure domain model of a school directory, minimised to what the rooms need."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar


@dataclass(frozen=True, order=True)
class ClassRef:
    """A class is identified by its school's UAI and its code inside that school."""

    uai: str
    code: str

    def __str__(self) -> str:
        return f"{self.uai}/{self.code}"


@dataclass(frozen=True)
class School:
    uai: str
    name: str


@dataclass(frozen=True)
class SchoolClass:
    ref: ClassRef
    label: str
    level: str = ""


@dataclass(frozen=True)
class Pupil:
    """A pupil is never a Matrix user; only first name and the last-name initial reach rooms."""

    id: str
    first_name: str
    last_name: str
    classes: tuple[ClassRef, ...]
    guardians: tuple[str, ...]  # legal guardians (parental authority) only
    contacts: tuple[str, ...] = ()  # other relatives: never members of anything


@dataclass(frozen=True)
class Guardian:
    id: str
    first_name: str
    last_name: str
    email: str | None = None


@dataclass(frozen=True)
class Staff:
    id: str
    first_name: str
    last_name: str
    email: str | None = None
    classes: tuple[ClassRef, ...] = ()
    head_teacher_of: tuple[ClassRef, ...] = ()
    director_of: tuple[str, ...] = ()  # UAIs
    functions: tuple[str, ...] = ()
    schools: tuple[str, ...] = ()
    teacher: bool = False  # teaches pupils (even when no class is attached yet)


@dataclass(frozen=True)
class Warning:
    """A problem found in the input; `file` and `line` point at it when known."""

    code: str
    message: str
    file: str | None = None
    line: int | None = None


@dataclass(frozen=True)
class Directory:
    schools: Mapping[str, School]
    classes: Mapping[ClassRef, SchoolClass]
    pupils: Mapping[str, Pupil]
    guardians: Mapping[str, Guardian]
    staff: Mapping[str, Staff]
    warnings: tuple[Warning, ...] = field(default=())
    # Where each person was read (id -> (file, line)), so later checks can point at it.
    origins: Mapping[str, tuple[str, int]] = field(default_factory=dict)

    def pupils_of_guardian(self) -> dict[str, tuple[str, ...]]:
        out: dict[str, list[str]] = {}
        for pupil in self.pupils.values():
            for gid in pupil.guardians:
                out.setdefault(gid, []).append(pupil.id)
        return {k: tuple(sorted(v)) for k, v in out.items()}

    def teachers_of_class(self) -> dict[ClassRef, tuple[str, ...]]:
        out: dict[ClassRef, list[str]] = {}
        for person in self.staff.values():
            for ref in person.classes:
                out.setdefault(ref, []).append(person.id)
        return {k: tuple(sorted(set(v))) for k, v in out.items()}

    def pupils_of_class(self) -> dict[ClassRef, tuple[str, ...]]:
        out: dict[ClassRef, list[str]] = {}
        for pupil in self.pupils.values():
            for ref in pupil.classes:
                out.setdefault(ref, []).append(pupil.id)
        return {k: tuple(sorted(v)) for k, v in out.items()}


_P = TypeVar("_P")


def _merge(kind: str, target: dict[str, _P], source: Mapping[str, _P], warnings: list[Warning]) -> None:
    for key, value in source.items():
        if key in target and target[key] != value:
            warnings.append(Warning("duplicate_id", f"{kind} id {key} appears in two sources; the later one is kept"))
        target[key] = value


def merge(parts: list[Directory]) -> Directory:
    """Union of directories from several sources (e.g. a lycée's AAF and an école's BE1D)."""
    schools: dict[str, School] = {}
    classes: dict[ClassRef, SchoolClass] = {}
    pupils: dict[str, Pupil] = {}
    guardians: dict[str, Guardian] = {}
    staff: dict[str, Staff] = {}
    warnings: list[Warning] = []
    origins: dict[str, tuple[str, int]] = {}
    for part in parts:
        origins.update(part.origins)
        schools.update(part.schools)
        classes.update(part.classes)
        _merge("pupil", pupils, part.pupils, warnings)
        _merge("guardian", guardians, part.guardians, warnings)
        _merge("staff", staff, part.staff, warnings)
        warnings.extend(part.warnings)
    return Directory(schools, classes, pupils, guardians, staff, tuple(warnings), origins)
