"""Writes a Directory as an AAF "Complet" export (tests' round-trips and the benchmark generator)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TextIO
from xml.sax.saxutils import escape, quoteattr

from bridge.directory.model import Directory

HEADER = '<?xml version="1.0" encoding="UTF-8"?>\n<ficAlimMENESR>\n'
# Attributes real exports carry and the importer must skip: written so benchmarks read
# files of realistic size (about 2.7 KB a pupil, as in the Ministry's sample).
PUPIL_FILLER = [
    ("ENTPersonNomPatro", ["NOMPATRONYMIQUE"]), ("ENTPersonAutresPrenoms", ["Jetsmao", "Xzuzcosvo"]),
    ("personalTitle", ["Mlle"]), ("ENTEleveBoursier", ["N"]), ("ENTEleveRegime", ["EXTERNE LIBRE"]),
    ("ENTEleveTransport", ["N"]), ("ENTEleveStatutEleve", ["SCOLAIRE"]), ("ENTEleveMEF", ["24133610210"]),
    ("ENTEleveLibelleMEF", ["1CAP2  COIFFURE"]), ("ENTEleveFiliere", ["CAP EN 2 ANS : 1ERE ANNEE"]),
    ("ENTEleveEnseignements", ["ARTS APPLIQUES ET CULTURES ARTISTIQUES", "EDUCATION PHYSIQUE ET SPORTIVE",
                               "ENSEIGNEMENT TECHNOLOGIQUE-PROFESSIONNEL", "MATHS SCIENCES",
                               "PROJET PLURIDISC. A CARACT.PROFESSIONNEL", "FRANCAIS  HIST.-GEO.",
                               "PREVENTION-SANTE-ENVIRONNEMENT", "ANGLAIS LV1"]),
    ("ENTEleveCodeEnseignements", ["278300", "100100", "071100", "061700", "003500", "043300", "312800"]),
    ("ENTEleveGroupes", ["52006$206"]), ("ENTElevePersRelEleve1", []), ("ENTEleveQualitePersRelEleve1", []),
]
RELATIVE_FILLER = [
    ("ENTPersonNomPatro", ["NOMPATRONYMIQUE"]), ("personalTitle", ["Mme"]), ("homePhone", ["0000000000"]),
    ("ENTPersonCodePostal", ["04200"]), ("ENTPersonVille", ["SISTERON"]), ("ENTPersonPays", ["FRANCE"]),
]


def _attr(name: str, values: Iterable[str]) -> str:
    vals = "".join(f"<value>{escape(v)}</value>" for v in values) or "<value/>"
    return f"<attr name={quoteattr(name)}>{vals}</attr>\n"


def _request(category_kind: str, category: str, rid: str, attrs: list[tuple[str, list[str]]]) -> str:
    body = "".join(_attr(n, v) for n, v in attrs)
    return (f"<addRequest>\n<operationalAttributes><attr name=\"{category_kind}\"><value>{category}</value>"
            f"</attr></operationalAttributes>\n<identifier><id>{escape(rid)}</id></identifier>\n"
            f"<attributes>\n{body}</attributes>\n</addRequest>\n")


def _write_parts(folder: Path, stem: str, requests: Iterator[str], *, per_file: int) -> None:
    part = 0
    fh: TextIO | None = None
    count = 0
    for req in requests:
        if fh is None or count >= per_file:
            if fh is not None:
                fh.write("</ficAlimMENESR>\n")
                fh.close()
            fh = (folder / f"{stem}_{part:04d}.xml").open("w", encoding="utf-8")
            fh.write(HEADER)
            part += 1
            count = 0
        fh.write(req)
        count += 1
    if fh is None:
        fh = (folder / f"{stem}_{part:04d}.xml").open("w", encoding="utf-8")
        fh.write(HEADER)
    fh.write("</ficAlimMENESR>\n")
    fh.close()


def write_export(d: Directory, folder: Path, *, date: str = "20260901", per_file: int = 50_000,
                 realistic: bool = False) -> None:
    """Structures get jointure keys 1..n; ids are written as they are in the model."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"ENT_Complet_{date}"
    jointure = {uai: str(10000 + i) for i, uai in enumerate(sorted(d.schools))}

    def etabs() -> Iterator[str]:
        for uai, school in sorted(d.schools.items()):
            yield _request("categorieStructure", "EtabEducNat", jointure[uai], [
                ("ENTStructureJointure", [jointure[uai]]), ("ENTStructureUAI", [uai]),
                ("ENTStructureNomCourant", [school.name])])

    def eleves() -> Iterator[str]:
        for p in d.pupils.values():
            rel = [f"{g}$1$1$1$0$0" for g in p.guardians] + [f"{c}$4$0$0$1$0" for c in p.contacts]
            level = next((d.classes[r].level for r in p.classes if r in d.classes), "")
            yield _request("categoriePersonne", "Eleve", p.id, [
                ("ENTPersonJointure", [p.id]), ("sn", [p.last_name]), ("givenName", [p.first_name]),
                ("ENTPersonDateNaissance", ["01/01/2015"]),  # present in real files; must be ignored
                ("ENTEleveAutoriteParentale", list(p.guardians)), ("ENTElevePersRelEleve", rel),
                ("ENTEleveNivFormation", [level] if level else []),
                ("ENTEleveClasses", [f"{jointure[r.uai]}${r.code}" for r in p.classes]),
                *(PUPIL_FILLER if realistic else [])])

    def relatives() -> Iterator[str]:
        for g in d.guardians.values():
            yield _request("categoriePersonne", "PersRelEleve", g.id, [
                ("ENTPersonJointure", [g.id]), ("sn", [g.last_name]), ("givenName", [g.first_name]),
                ("mail", [g.email] if g.email else []), ("telephoneNumber", ["0600000000"]),
                ("ENTPersonAdresse", ["1 rue de l'Exemple"]), *(RELATIVE_FILLER if realistic else [])])

    def staff() -> Iterator[str]:
        for s in d.staff.values():
            functions = [f"{jointure[u]}$DIR$DIRECTION" for u in s.director_of]
            yield _request("categoriePersonne", "PersEducNat", s.id, [
                ("ENTPersonJointure", [s.id]), ("sn", [s.last_name]), ("givenName", [s.first_name]),
                ("mail", [s.email] if s.email else []),
                ("ENTPersonStructRattach", [jointure[u] for u in s.schools if u in jointure]),
                ("ENTAuxEnsClasses", [f"{jointure[r.uai]}${r.code}" for r in s.classes]),
                ("ENTAuxEnsClassesPrincipal", [f"{jointure[r.uai]}${r.code}" for r in s.head_teacher_of]),
                ("ENTPersonFonctions", functions),
                ("PersEducNatPresenceDevantEleves", ["O" if s.teacher else "N"])])

    _write_parts(folder, f"{stem}_EtabEducNat", etabs(), per_file=per_file)
    _write_parts(folder, f"{stem}_Eleve", eleves(), per_file=per_file)
    _write_parts(folder, f"{stem}_PersRelEleve", relatives(), per_file=per_file)
    _write_parts(folder, f"{stem}_PersEducNat", staff(), per_file=per_file)
