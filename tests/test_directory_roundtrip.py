"""Property: any directory written as an AAF export reads back identical (hypothesis)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.directory.importers.aaf import import_aaf
from bridge.directory.importers.aaf_writer import write_export
from bridge.directory.model import ClassRef, Directory, Guardian, Pupil, School, SchoolClass, Staff

# Names as real exports have them: letters (accents included), spaces, hyphens, apostrophes, '&'.
name = st.text(alphabet=st.characters(whitelist_categories=("Lu", "Ll"), whitelist_characters=" -'&<"),
               min_size=1, max_size=12).map(str.strip).filter(bool)
ident = st.text(alphabet="0123456789ABCDEF", min_size=1, max_size=8)


@st.composite
def directories(draw: st.DrawFn) -> Directory:
    uais = draw(st.lists(st.from_regex(r"\A0[0-9]{6}[A-Z]\Z"), min_size=1, max_size=3, unique=True))
    schools = {u: School(u, draw(name)) for u in uais}
    refs = sorted({ClassRef(draw(st.sampled_from(uais)), draw(st.from_regex(r"\A[1-6][A-Z]{1,2}\Z")))
                   for _ in range(draw(st.integers(1, 6)))})
    gids = draw(st.lists(ident, max_size=8, unique=True))
    guardians = {f"G{g}": Guardian(f"G{g}", draw(name), draw(name),
                                   draw(st.none() | st.emails())) for g in gids}
    pupils: dict[str, Pupil] = {}
    for pid in draw(st.lists(ident, min_size=1, max_size=10, unique=True)):
        mine = draw(st.lists(st.sampled_from(sorted(guardians)), max_size=3, unique=True)) if guardians else []
        others = [g for g in guardians if g not in mine][:1]
        pupils[f"P{pid}"] = Pupil(f"P{pid}", draw(name), draw(name), (draw(st.sampled_from(refs)),),
                                  tuple(sorted(mine)), tuple(others))
    used = {r for p in pupils.values() for r in p.classes}
    classes = {r: SchoolClass(r, r.code, draw(st.sampled_from(["", "SIXIEME", "CM1"]))) for r in used}
    staff: dict[str, Staff] = {}
    for sid in draw(st.lists(ident, max_size=5, unique=True)):
        taught = tuple(sorted(set(draw(st.lists(st.sampled_from(sorted(used)), max_size=3)))))
        schools_of = tuple(sorted({r.uai for r in taught}))
        staff[f"S{sid}"] = Staff(f"S{sid}", draw(name), draw(name), None, taught, (), (), (), schools_of,
                                 teacher=bool(taught))
    return Directory(schools, classes, pupils, guardians, staff)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(directories())
def test_aaf_export_roundtrips(d: Directory) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        write_export(d, Path(tmp), per_file=3)  # several parts per category
        back, _ = import_aaf([Path(tmp)])
    assert back.schools == d.schools
    assert back.pupils == d.pupils
    assert set(back.classes) == set(d.classes)  # levels: the importer takes the first pupil's
    assert back.staff == d.staff
    referenced = {g for p in d.pupils.values() for g in p.guardians}
    assert back.guardians == {k: v for k, v in d.guardians.items() if k in referenced}
    assert not [w for w in back.warnings if w.code != "duplicate_id"]
