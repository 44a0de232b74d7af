"""BE1D / ONDE importer (écoles): the pupils, teachers and guardians CSV exports.

BE1D has no person identifiers. Ids are derived (see `stable_id`):
- pupil: UAI + last name + first name + birth date (the date is hashed, never kept);
  ONDE's INE is used instead when the export has it;
- teacher: UAI + last name + first name;
- guardian: UAI + last name + first name; homonyms in one school are told apart by the name
  of their first child (alphabetically), and reported.
Guardians are linked to children by folded (last name, first name, class); when that matches
several pupils the link is reported as ambiguous and not made.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from bridge.directory.model import ClassRef, Directory, Guardian, Pupil, School, SchoolClass, Staff, Warning
from bridge.directory.normalise import fold, stable_id
from bridge.errors import InputError

# Header aliases, folded: 2014 and 2015+ BE1D layouts, ONDE pupils layout.
PUPIL_COLS = {
    "last": ("NOM ELEVE", "NOM DE FAMILLE ELEVE", "NOM"),
    "usage": ("NOM D USAGE ELEVE", "NOM USAGE ELEVE"),
    "first": ("PRENOM ELEVE", "PRENOM"),
    "birth": ("DATE NAISSANCE", "DATE DE NAISSANCE"),
    "level": ("NIVEAU",),
    "class": ("CLASSE", "LIBELLE CLASSE"),
    "class_id": ("IDENTIFIANT CLASSE",),
    "ine": ("INE", "IDENTIFIANT NATIONAL ELEVE"),
}
TEACHER_COLS: dict[str, tuple[str, ...]] = {
    "last": ("NOM",), "usage": ("NOM USAGE",), "first": ("PRENOM",), "email": ("COURRIEL",),
    "director": ("DIRECTEUR",), "class": ("CLASSE",),
}
GUARDIAN_COLS: dict[str, tuple[str, ...]] = {
    "last": ("NOM RESPONSABLE",), "usage": ("NOM USAGE RESPONSABLE",), "first": ("PRENOM RESPONSABLE",),
    "email": ("COURRIEL",),
}
CHILD_GROUP = ("NOM D USAGE ENFANT", "NOM DE FAMILLE ENFANT", "PRENOM ENFANT", "CLASSES ENFANTS")


@dataclass(frozen=True)
class Row:
    file: str
    line: int
    cells: list[str]


def decode(raw: bytes) -> str:
    """UTF-16 (with its byte-order mark, or without: NULs every other byte), else UTF-8, line by
    line: a line that isn't UTF-8 is read as ISO-8859-1 (BE1D's own encoding), and only that line,
    so one stray line no longer turns the accents of every other line into mojibake."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16")
    head = raw[:1024]
    if head and head.count(b"\x00") * 3 > len(head):
        return raw.decode("utf-16-le" if head[1:2] == b"\x00" else "utf-16-be")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    lines = []
    for line in raw.split(b"\n"):
        try:
            lines.append(line.decode("utf-8"))
        except UnicodeDecodeError:
            lines.append(line.decode("iso-8859-1"))  # every byte is valid
    return "\n".join(lines).removeprefix("\ufeff")


def read_csv(path: Path) -> tuple[list[str], list[Row]]:
    """Folded header and rows with their line numbers; encoding detected (see `decode`)."""
    text = decode(path.read_bytes())
    sample = text[:4096]
    delimiter = ";" if sample.count(";") >= sample.count(",") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = [fold(h) for h in next(reader)]
    except StopIteration:
        raise InputError("empty file", file=str(path)) from None
    rows = [Row(str(path), reader.line_num, [c.strip() for c in cells]) for cells in reader
            if any(c.strip() for c in cells)]
    return header, rows


def _index(header: list[str], cols: dict[str, tuple[str, ...]], *, file: str,
           required: tuple[str, ...]) -> dict[str, int]:
    idx: dict[str, int] = {}
    for key, names in cols.items():
        for name in names:
            if name in header:
                idx[key] = header.index(name)
                break
    missing = [k for k in required if k not in idx]
    if missing:
        raise InputError(f"missing column(s) {', '.join(cols[m][0].title() for m in missing)}; "
                         f"header is {header}", file=file, line=1)
    return idx


def _cell(row: Row, idx: dict[str, int], key: str) -> str:
    i = idx.get(key)
    return row.cells[i] if i is not None and i < len(row.cells) else ""


def find_files(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in folder.glob("*.csv"):
        low = path.name.lower()
        for kind in ("eleves", "enseignants", "responsables"):
            if kind in low:
                found[kind] = path
    return found


def import_be1d(folder: Path, *, uai: str, school_name: str | None = None) -> Directory:
    files = find_files(folder)
    if "eleves" not in files:
        raise InputError("no pupils export (*eleves*.csv) found", file=str(folder))
    warnings: list[Warning] = []
    classes: dict[ClassRef, SchoolClass] = {}
    pupils: dict[str, Pupil] = {}
    by_name_class: dict[tuple[str, str, str], list[str]] = {}
    origins: dict[str, tuple[str, int]] = {}

    header, rows = read_csv(files["eleves"])
    idx = _index(header, PUPIL_COLS, file=str(files["eleves"]), required=("last", "first", "class"))
    for row in rows:
        label = _cell(row, idx, "class")
        code = _cell(row, idx, "class_id") or fold(label)
        ref = ClassRef(uai, code)
        classes.setdefault(ref, SchoolClass(ref, label, _cell(row, idx, "level")))
        last, first = _cell(row, idx, "last"), _cell(row, idx, "first")
        ine = _cell(row, idx, "ine")
        pid = stable_id(f"be1d-{uai}-p", ine) if ine else stable_id(f"be1d-{uai}-p", last, first,
                                                                     _cell(row, idx, "birth"))
        if pid in pupils:
            warnings.append(Warning("duplicate_id", f"pupil {first} {last[:1]}. listed twice", row.file, row.line))
            continue
        pupils[pid] = Pupil(pid, first, last, (ref,), ())
        origins[pid] = (row.file, row.line)
        by_name_class.setdefault((fold(last), fold(first), fold(label)), []).append(pid)
        if _cell(row, idx, "usage"):
            by_name_class.setdefault((fold(_cell(row, idx, "usage")), fold(first), fold(label)), []).append(pid)

    staff: dict[str, Staff] = {}
    if "enseignants" in files:
        header, rows = read_csv(files["enseignants"])
        idx = _index(header, TEACHER_COLS, file=str(files["enseignants"]), required=("last", "first"))
        label_to_ref = {fold(c.label): c.ref for c in classes.values()}
        for row in rows:
            last, first = _cell(row, idx, "last"), _cell(row, idx, "first")
            sid = stable_id(f"be1d-{uai}-t", last, first)
            refs = []
            for label in filter(None, (x.strip() for x in _cell(row, idx, "class").split(","))):
                known = label_to_ref.get(fold(label))
                if known is None:
                    warnings.append(Warning("unknown_class", f"teacher's class {label!r} has no pupils",
                                            row.file, row.line))
                else:
                    refs.append(known)
            director = fold(_cell(row, idx, "director")) in ("OUI", "O", "1", "TRUE")
            if sid in staff:
                warnings.append(Warning("duplicate_id", f"teacher {first} {last} listed twice", row.file, row.line))
            staff[sid] = Staff(sid, first, last, _cell(row, idx, "email") or None, tuple(sorted(set(refs))),
                               (), (uai,) if director else (), ("DIRECTEUR",) if director else (), (uai,),
                               teacher=True)
            origins[sid] = (row.file, row.line)

    guardians: dict[str, Guardian] = {}
    links: dict[str, set[str]] = {}
    if "responsables" in files:
        header, rows = read_csv(files["responsables"])
        path = str(files["responsables"])
        idx = _index(header, GUARDIAN_COLS, file=path, required=("last", "first"))
        groups = [i for i, h in enumerate(header) if h == CHILD_GROUP[1]]
        parsed = []
        name_count: dict[str, int] = {}
        for row in rows:
            last, first = _cell(row, idx, "last"), _cell(row, idx, "first")
            children = []
            for g in groups:
                child = [row.cells[j] if j < len(row.cells) else "" for j in (g, g + 1, g + 2)]
                if child[0] or child[1]:
                    children.append(tuple(child))
            base = stable_id(f"be1d-{uai}-g", last, first)
            name_count[base] = name_count.get(base, 0) + 1
            parsed.append((row, last, first, base, children))
        for row, last, first, base, children in parsed:
            gid = base
            if name_count[base] > 1:
                # Homonyms: told apart by their first child's name (stable across re-imports,
                # unlike file order), and reported.
                first_child = min((fold(c[0]), fold(c[1])) for c in children) if children else ("", "")
                gid = stable_id(f"be1d-{uai}-g", last, first, *first_child)
                warnings.append(Warning("homonym", f"several guardians named {first} {last[:1]}.: told apart "
                                        "by their children", row.file, row.line))
            if gid in guardians:
                warnings.append(Warning("duplicate_id", f"guardian {first} {last[:1]}. listed twice",
                                        row.file, row.line))
            guardians[gid] = Guardian(gid, first, last, _cell(row, idx, "email") or None)
            origins[gid] = (row.file, row.line)
            for child_last, child_first, child_class in children:
                matches = sorted(set(by_name_class.get((fold(child_last), fold(child_first), fold(child_class)), [])))
                if len(matches) == 1:
                    links.setdefault(matches[0], set()).add(gid)
                elif not matches:
                    warnings.append(Warning("guardian_unknown_pupil",
                                            f"child {child_first} {child_last[:1]}. ({child_class}) not among "
                                            "the pupils", row.file, row.line))
                else:
                    warnings.append(Warning("ambiguous_link", f"child {child_first} {child_last[:1]}. "
                                            f"({child_class}) matches {len(matches)} pupils: not linked",
                                            row.file, row.line))
    for pid, gids in links.items():
        p = pupils[pid]
        pupils[pid] = Pupil(p.id, p.first_name, p.last_name, p.classes, tuple(sorted(gids)))
    # Guardians linked to nobody are kept out: they would have no room anyway.
    linked = {g for gids in links.values() for g in gids}
    guardians = {k: v for k, v in guardians.items() if k in linked}
    school = School(uai, school_name or folder.name)
    return Directory({uai: school}, classes, pupils, guardians, staff, tuple(warnings), origins)
