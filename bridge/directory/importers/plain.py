"""Plain YAML directory format, for small schools and tests (documented in docs/directory-yaml.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bridge.directory.model import ClassRef, Directory, Guardian, Pupil, School, SchoolClass, Staff
from bridge.errors import InputError
from bridge.yamlutil import load_with_lines


def _req(item: dict[str, Any], key: str, *, file: str, what: str) -> str:
    value = item.get(key)
    if value is None or str(value).strip() == "":
        raise InputError(f"{what}: missing key {key!r}", file=file, line=item.get("__line__"))
    return str(value)


def _list(item: dict[str, Any], key: str) -> list[str]:
    value = item.get(key) or []
    return [str(v) for v in (value if isinstance(value, list) else [value])]


def import_yaml(path: Path) -> Directory:
    file = str(path)
    data = load_with_lines(path, max_bytes=512 * 1024 * 1024)  # a whole département can be large
    if not isinstance(data, dict):
        raise InputError("expected a mapping with schools, classes, staff, pupils, guardians", file=file)
    for key in data:
        if key not in ("schools", "classes", "staff", "pupils", "guardians") and not key.startswith("__"):
            raise InputError(f"unknown top-level key {key!r}", file=file, line=1)
    schools: dict[str, School] = {}
    for item in data.get("schools") or []:
        uai = _req(item, "uai", file=file, what="school")
        schools[uai] = School(uai, str(item.get("name") or uai))
    default_uai = next(iter(schools)) if len(schools) == 1 else None

    def uai_of(item: dict[str, Any], what: str) -> str:
        uai = str(item.get("uai") or default_uai or "")
        if uai not in schools:
            raise InputError(f"{what}: unknown or missing school uai {uai!r}", file=file, line=item.get("__line__"))
        return uai

    classes: dict[ClassRef, SchoolClass] = {}
    for item in data.get("classes") or []:
        ref = ClassRef(uai_of(item, "class"), _req(item, "code", file=file, what="class"))
        classes[ref] = SchoolClass(ref, str(item.get("label") or ref.code), str(item.get("level") or ""))

    def refs(item: dict[str, Any], key: str, what: str) -> tuple[ClassRef, ...]:
        uai = uai_of(item, what)
        out = []
        for code in _list(item, key):
            ref = ClassRef(uai, code)
            if ref not in classes:
                raise InputError(f"{what}: unknown class {code!r}", file=file, line=item.get("__line__"))
            out.append(ref)
        return tuple(sorted(set(out)))

    origins: dict[str, tuple[str, int]] = {}
    ids: set[str] = set()

    def new_id(item: dict[str, Any], what: str) -> str:
        pid = _req(item, "id", file=file, what=what)
        if pid in ids:
            raise InputError(f"{what}: duplicate id {pid!r}", file=file, line=item.get("__line__"))
        ids.add(pid)
        origins[pid] = (file, int(item.get("__line__") or 0))
        return pid

    staff: dict[str, Staff] = {}
    for item in data.get("staff") or []:
        sid = new_id(item, "staff")
        uai = uai_of(item, "staff")
        director = bool(item.get("director"))
        staff[sid] = Staff(sid, _req(item, "first_name", file=file, what="staff"),
                           _req(item, "last_name", file=file, what="staff"), item.get("email"),
                           refs(item, "classes", "staff"), refs(item, "head_teacher_of", "staff"),
                           (uai,) if director else (), tuple(_list(item, "functions")), (uai,),
                           teacher=bool(item.get("classes")) or bool(item.get("teacher")))
    guardians: dict[str, Guardian] = {}
    for item in data.get("guardians") or []:
        gid = new_id(item, "guardian")
        guardians[gid] = Guardian(gid, _req(item, "first_name", file=file, what="guardian"),
                                  _req(item, "last_name", file=file, what="guardian"), item.get("email"))
    pupils: dict[str, Pupil] = {}
    for item in data.get("pupils") or []:
        pid = new_id(item, "pupil")
        pupils[pid] = Pupil(pid, _req(item, "first_name", file=file, what="pupil"),
                            _req(item, "last_name", file=file, what="pupil"), refs(item, "classes", "pupil"),
                            tuple(sorted(set(_list(item, "guardians")))),
                            tuple(sorted(set(_list(item, "contacts")))))
    return Directory(schools, classes, pupils, guardians, staff, (), origins)
