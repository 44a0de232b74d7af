"""AAF importer: picks an export's files, applies Complet/Delta requests, builds the model."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from bridge.directory.importers.aaf_xml import Record, read_records
from bridge.directory.model import ClassRef, Directory, Guardian, Pupil, School, SchoolClass, Staff, Warning
from bridge.errors import InputError

# Only these attributes are read: birth dates, addresses and phone numbers never enter memory.
KEEP = frozenset({
    "ENTPersonJointure", "sn", "givenName", "mail", "ENTPersonStructRattach",
    "ENTEleveClasses", "ENTEleveAutoriteParentale", "ENTElevePersRelEleve", "ENTEleveNivFormation",
    "ENTAuxEnsClasses", "ENTAuxEnsClassesPrincipal", "ENTPersonFonctions", "PersEducNatPresenceDevantEleves",
    "ENTStructureJointure", "ENTStructureUAI", "ENTStructureNomCourant", "ENTStructureClasses",
})
CATEGORIES = ("EtabEducNat", "Eleve", "PersRelEleve", "PersEducNat")
_FILE = re.compile(r"_(Complet|Delta)_(\d{8})_(EtabEducNat|Eleve|PersRelEleve|PersEducNat)_(\d{4})\.xml$")
_FILE_LOOSE = re.compile(r"_(EtabEducNat|Eleve|PersRelEleve|PersEducNat)_(\d{4})\.xml$")
# Director functions in ENTPersonFonctions: "<structure>$DIR$DIRECTION…"
_DIRECTOR_CODES = ("DIR",)


@dataclass
class AafState:
    """Records by category and id: the snapshot a Delta applies to (JSON-serialisable)."""

    records: dict[str, dict[str, dict[str, list[str]]]] = field(
        default_factory=lambda: {c: {} for c in CATEGORIES})
    where: dict[tuple[str, str], tuple[str, int]] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {"records": self.records}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> AafState:
        state = cls()
        records = data.get("records", {})
        if not isinstance(records, dict):
            raise ValueError("AAF state: 'records' must be a mapping")
        state.records.update(records)
        return state


def export_files(folder: Path) -> list[tuple[str, str, Path]]:
    """(kind Complet|Delta, category, path) of an export folder, in apply order."""
    found: list[tuple[str, str, str, Path]] = []
    for path in sorted(folder.glob("*.xml")):
        m = _FILE.search(path.name)
        if m:
            found.append((m.group(2), m.group(1), m.group(3), path))
            continue
        loose = _FILE_LOOSE.search(path.name)
        if loose:
            found.append(("", "", loose.group(1), path))
    order = {c: i for i, c in enumerate(CATEGORIES)}
    found.sort(key=lambda t: (t[0], t[1] != "Complet", order[t[2]], t[3].name))
    return [(kind, cat, path) for _, kind, cat, path in found]


def apply_file(state: AafState, path: Path, *, kind: str, category: str, warnings: list[Warning],
               replaced: set[str]) -> None:
    """Apply one file's requests. A Complet file replaces its category's previous snapshot."""
    table = state.records[category]
    if kind == "Complet" and category not in replaced:
        table.clear()
        replaced.add(category)
    for rec in read_records(path, keep=KEEP, warnings=warnings):
        _apply(state, rec, table=table, category=category, warnings=warnings, delta=kind != "Complet")


def _apply(state: AafState, rec: Record, *, table: dict[str, dict[str, list[str]]], category: str,
           warnings: list[Warning], delta: bool) -> None:
    if rec.category and rec.category != category:
        warnings.append(Warning("aaf_wrong_category", f"{rec.category} request in a {category} file, skipped",
                                file=rec.file, line=rec.line))
        return
    if not rec.id:
        raise InputError(f"{rec.op}Request without identifier", file=rec.file, line=rec.line)
    if rec.op == "add":
        if rec.id in table and not delta:
            warnings.append(Warning("duplicate_id", f"{category} {rec.id} defined twice; the later one is kept",
                                    file=rec.file, line=rec.line))
        table[rec.id] = rec.attrs
    elif rec.op == "modify":
        if rec.id not in table:
            warnings.append(Warning("aaf_modify_unknown", f"modification of unknown {category} {rec.id}: "
                                    "treated as an addition", file=rec.file, line=rec.line))
            table[rec.id] = {}
        table[rec.id].update(rec.attrs)
    elif table.pop(rec.id, None) is None:
        warnings.append(Warning("aaf_delete_unknown", f"deletion of unknown {category} {rec.id}",
                                file=rec.file, line=rec.line))
    state.where[(category, rec.id)] = (rec.file, rec.line)


def load_state(sources: Iterable[Path], *, state: AafState | None = None,
               warnings: list[Warning]) -> AafState:
    state = state or AafState()
    for folder in sources:
        files = export_files(folder) if folder.is_dir() else []
        if not files:
            raise InputError("no AAF file (…_Eleve_NNNN.xml, …_EtabEducNat_NNNN.xml…) found", file=str(folder))
        replaced: set[str] = set()
        for kind, category, path in files:
            apply_file(state, path, kind=kind or "Complet", category=category, warnings=warnings,
                       replaced=replaced)
    return state


def _first(attrs: dict[str, list[str]], name: str) -> str:
    values = attrs.get(name) or []
    return values[0] if values else ""


def _split(value: str, n: int) -> list[str]:
    parts = value.split("$")
    return parts + [""] * (n - len(parts))


def build_directory(state: AafState, *, academie: str | None = None, warnings: list[Warning]) -> Directory:
    """Assemble the model from the records (pure)."""
    prefix = f"{academie}-" if academie else ""
    where = state.where

    def pid(raw: str) -> str:
        return prefix + raw

    schools: dict[str, School] = {}
    jointure_to_uai: dict[str, str] = {}
    for sid, attrs in state.records["EtabEducNat"].items():
        uai = _first(attrs, "ENTStructureUAI")
        if not uai:
            file, line = where.get(("EtabEducNat", sid), (None, None))
            warnings.append(Warning("structure_without_uai", f"structure {sid} has no UAI", file=file, line=line))
            continue
        schools[uai] = School(uai, _first(attrs, "ENTStructureNomCourant") or uai)
        jointure_to_uai[_first(attrs, "ENTStructureJointure") or sid] = uai

    def class_ref(value: str, category: str, rid: str) -> ClassRef | None:
        struct, code = _split(value, 2)[:2]
        uai = jointure_to_uai.get(struct)
        if not uai or not code:
            file, line = where.get((category, rid), (None, None))
            warnings.append(Warning("unknown_structure", f"class {value!r} of {category} {rid}: "
                                    "unknown structure", file=file, line=line))
            return None
        return ClassRef(uai, code)

    classes: dict[ClassRef, SchoolClass] = {}
    levels: dict[ClassRef, str] = {}
    pupils: dict[str, Pupil] = {}
    for rid, attrs in state.records["Eleve"].items():
        refs = sorted({r for v in set(attrs.get("ENTEleveClasses", [])) if (r := class_ref(v, "Eleve", rid))})
        authority = attrs.get("ENTEleveAutoriteParentale")
        guardians: list[str] = []
        contacts: list[str] = []
        for rel in attrs.get("ENTElevePersRelEleve", []):
            rel_id, _relation, _fin, legal, *_ = _split(rel, 6)
            (guardians if legal in ("1", "2") else contacts).append(rel_id)
        if authority is not None:  # the authoritative field; the relation list is only a fallback
            contacts = sorted(set(contacts) | set(guardians) - set(authority))
            guardians = list(authority)
        for ref in refs:
            levels.setdefault(ref, _first(attrs, "ENTEleveNivFormation"))
        pupils[pid(rid)] = Pupil(pid(rid), _first(attrs, "givenName"), _first(attrs, "sn"), tuple(refs),
                                 tuple(sorted({pid(g) for g in guardians})),
                                 tuple(sorted({pid(c) for c in contacts})))
    for ref, level in levels.items():
        classes[ref] = SchoolClass(ref, ref.code, level)

    relatives = state.records["PersRelEleve"]
    guardian_ids = {g for p in pupils.values() for g in p.guardians}
    guardians_out: dict[str, Guardian] = {}
    for gid in sorted(guardian_ids):
        found = relatives.get(gid[len(prefix):])
        if found is None:
            continue  # reported by validation (pupil's guardian missing from the export)
        guardians_out[gid] = Guardian(gid, _first(found, "givenName"), _first(found, "sn"),
                                      _first(found, "mail") or None)

    staff: dict[str, Staff] = {}
    for rid, attrs in state.records["PersEducNat"].items():
        refs = sorted({r for v in set(attrs.get("ENTAuxEnsClasses", [])) if (r := class_ref(v, "PersEducNat", rid))})
        head = sorted({r for v in set(attrs.get("ENTAuxEnsClassesPrincipal", []))
                       if "$" in v and (r := class_ref(v, "PersEducNat", rid))})
        functions = tuple(sorted(set(attrs.get("ENTPersonFonctions", []))))
        director_of = tuple(sorted({jointure_to_uai[f.split("$")[0]] for f in functions
                                    if f.split("$")[0] in jointure_to_uai
                                    and _split(f, 3)[1] in _DIRECTOR_CODES}))
        school_ids = {jointure_to_uai[s] for s in attrs.get("ENTPersonStructRattach", []) if s in jointure_to_uai}
        school_ids |= {r.uai for r in refs}
        staff[pid(rid)] = Staff(pid(rid), _first(attrs, "givenName"), _first(attrs, "sn"),
                                _first(attrs, "mail") or None, tuple(refs), tuple(head), director_of,
                                functions, tuple(sorted(school_ids)),
                                teacher=bool(refs) or _first(attrs, "PersEducNatPresenceDevantEleves") == "O")
    origins = {prefix + rid: loc for (cat, rid), loc in where.items() if cat != "EtabEducNat"}
    return Directory(schools, classes, pupils, guardians_out, staff, (), origins)


def import_aaf(sources: list[Path], *, academie: str | None = None,
               state: AafState | None = None) -> tuple[Directory, AafState]:
    warnings: list[Warning] = []
    state = load_state(sources, state=state, warnings=warnings)
    directory = build_directory(state, academie=academie, warnings=warnings)
    return Directory(directory.schools, directory.classes, directory.pupils, directory.guardians,
                     directory.staff, tuple(warnings), directory.origins), state
