"""Reads directory sources of any supported format and merges them into one Directory."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from bridge.directory.importers.aaf import AafState, import_aaf
from bridge.directory.importers.be1d import import_be1d
from bridge.directory.importers.plain import import_yaml
from bridge.directory.model import Directory, School, Warning, merge
from bridge.errors import InputError


def detect(path: Path) -> str:
    if path.is_file() and path.suffix in (".yaml", ".yml"):
        return "yaml"
    if path.is_dir():
        if any(path.glob("*.xml")):
            return "aaf"
        if any(path.glob("*.csv")):
            return "be1d"
    if not path.exists():
        raise InputError("no such file or folder", file=str(path))
    raise InputError("unrecognised directory source (expected an AAF folder of .xml, a BE1D folder "
                     "of .csv, or a .yaml file)", file=str(path))


def load(sources: list[str], *, academie: str | None = None, aaf_state: AafState | None = None,
         school_names: Mapping[str, str] | None = None) -> tuple[Directory, AafState | None]:
    """Load every source. `PATH@UAI` gives a BE1D export its school's UAI. Consecutive AAF
    folders form one export history (a Complet then its Deltas), applied in order on top of
    `aaf_state` (the previous snapshot) when given. school_names (UAI -> name, the config's
    `directory.school_names`): BE1D exports don't name their school."""
    names = dict(school_names or {})
    parts: list[Directory] = []
    aaf_folders: list[Path] = []
    extra: list[Warning] = []
    for spec in sources:
        raw, _, uai = spec.partition("@")
        path = Path(raw)
        kind = detect(path)
        if kind == "aaf":
            aaf_folders.append(path)
        elif kind == "be1d":
            if not uai:
                uai = "BE1D-" + path.name
                extra.append(Warning("be1d_without_uai", f"no UAI given for {path} (write PATH@UAI); "
                                     f"using {uai!r}", file=str(path)))
            if uai not in names:
                extra.append(Warning("be1d_without_name", f"the BE1D export of {uai} doesn't name its school: "
                                     f"rooms say {path.name!r}; add it to directory.school_names", file=str(path)))
            parts.append(import_be1d(path, uai=uai, school_name=names.get(uai)))
        else:
            parts.append(import_yaml(path))
    state = None
    if aaf_folders:
        directory, state = import_aaf(aaf_folders, academie=academie, state=aaf_state)
        parts.insert(0, directory)
    merged = merge(parts)
    if names:  # the admin's names win over whatever a source said (or didn't)
        schools = {uai: School(uai, names.get(uai, s.name)) for uai, s in merged.schools.items()}
        merged = Directory(schools, merged.classes, merged.pupils, merged.guardians, merged.staff,
                           merged.warnings, merged.origins)
    if extra:
        merged = Directory(merged.schools, merged.classes, merged.pupils, merged.guardians, merged.staff,
                           merged.warnings + tuple(extra), merged.origins)
    return merged, state
