"""Directory import: own fixtures (quirks), safety against hostile XML, the real Ministry samples."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bridge.cli import main
from bridge.directory.importers.aaf import import_aaf
from bridge.directory.importers.be1d import import_be1d
from bridge.directory.importers.plain import import_yaml
from bridge.directory.model import ClassRef
from bridge.directory.sources import load
from bridge.directory.validate import report, validate
from bridge.errors import InputError
from tests.conftest import samples_dir

FIX = Path(__file__).parent / "fixtures"


def test_aaf_small_semantics() -> None:
    d, _ = import_aaf([FIX / "aaf-small"])
    assert set(d.schools) == {"0750001A"}
    zoe = d.pupils["E1"]
    assert (zoe.first_name, zoe.last_name) == ("Zoé", "Léger")  # HTML entity + ISO-8859-15
    assert zoe.guardians == ("R1", "R2") and zoe.contacts == ("R3",)  # a contact is never a guardian
    hugo = d.pupils["E2"]  # no ENTEleveAutoriteParentale: falls back on the legal-representative field
    assert hugo.guardians == ("R1",) and hugo.contacts == ("R3",)
    assert "R3" not in d.guardians
    assert d.guardians["R1"].email == "anne@example.org"
    teacher = d.staff["T1"]
    assert teacher.classes == (ClassRef("0750001A", "5B"), ClassRef("0750001A", "6A"))
    assert teacher.head_teacher_of == (ClassRef("0750001A", "6A"),)
    assert d.staff["D1"].director_of == ("0750001A",)
    assert d.origins["E1"][1] == 3  # line of the request
    codes = [w.code for w in validate(d)]
    assert codes.count("pupil_without_guardian") == 1  # Nina
    # Minimisation: no birth date, phone or address anywhere in the model.
    blob = repr(d)
    assert "2013" not in blob and "0600000000" not in blob and "rue X" not in blob


def test_aaf_delta_applies_on_snapshot_with_repair_warning() -> None:
    _, state = import_aaf([FIX / "aaf-small"])
    d2, _ = import_aaf([FIX / "aaf-small-delta"], state=state)
    assert d2.pupils["E2"].classes == (ClassRef("0750001A", "6A"),)
    assert "E3" not in d2.pupils
    repaired = [w for w in d2.warnings if w.code == "aaf_repaired_tag"]
    assert len(repaired) == 1 and repaired[0].line == 7 and repaired[0].file.endswith("Eleve_0000.xml")
    assert d2.pupils["E2"].guardians == ("R1",)  # untouched attributes are kept


def _write(tmp: Path, name: str, body: str) -> Path:
    folder = tmp / "x"
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(body)
    return folder


@pytest.mark.parametrize("doctype", [
    '<!DOCTYPE f [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>',
    '<!DOCTYPE f [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
    '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">'
    '<!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;"><!ENTITY f "&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;">'
    '<!ENTITY g "&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;"><!ENTITY h "&g;&g;&g;&g;&g;&g;&g;&g;&g;&g;">]>',
])
def test_hostile_xml_refused_fast(tmp_path: Path, doctype: str) -> None:
    body = (f'<?xml version="1.0"?>\n{doctype}\n<ficAlimMENESR><addRequest><operationalAttributes>'
            '<attr name="categoriePersonne"><value>Eleve</value></attr></operationalAttributes>'
            '<identifier><id>1</id></identifier><attributes><attr name="sn"><value>&h;&xxe;</value></attr>'
            '</attributes></addRequest></ficAlimMENESR>\n')
    folder = _write(tmp_path, "X_Complet_20260101_Eleve_0000.xml", body)
    start = time.monotonic()
    with pytest.raises(InputError, match=r"Eleve_0000\.xml:2: entity declaration .* refused"):
        import_aaf([folder])
    assert time.monotonic() - start < 1.0


def test_malformed_xml_names_file_and_line(tmp_path: Path) -> None:
    folder = _write(tmp_path, "X_Complet_20260101_Eleve_0000.xml",
                    "<ficAlimMENESR>\n<addRequest>\n<identifier><id>1</id></identifier>\n</oops>\n")
    with pytest.raises(InputError, match=r"Eleve_0000\.xml:4: malformed XML: mismatched tag"):
        import_aaf([folder])


def test_be1d_onde_layout_ambiguous_and_unknown_links() -> None:
    d = import_be1d(FIX / "be1d-onde", uai="0750002B")
    assert len(d.pupils) == 3 and len(d.classes) == 2
    assert {c.label for c in d.classes.values()} == {"CP A", "CE1"}
    codes = sorted(w.code for w in d.warnings)
    assert codes == ["ambiguous_link", "guardian_unknown_pupil"]
    ambiguous = next(w for w in d.warnings if w.code == "ambiguous_link")
    assert ambiguous.line == 2 and ambiguous.file.endswith("ONDE-responsables.csv")
    assert all(not p.guardians for p in d.pupils.values() if p.first_name == "Léa")  # never guessed
    jules = next(p for p in d.pupils.values() if p.first_name == "Jules")
    assert len(jules.guardians) == 1
    director = next(s for s in d.staff.values() if s.last_name == "BLANC")
    assert director.director_of == ("0750002B",) and director.email == "sophie.blanc@ac-x.fr"
    # Ids are deterministic across imports.
    assert set(import_be1d(FIX / "be1d-onde", uai="0750002B").pupils) == set(d.pupils)


def test_yaml_format_and_errors(tmp_path: Path) -> None:
    d = import_yaml(FIX / "school.yaml")
    assert d.pupils and d.guardians and d.staff
    bad = tmp_path / "bad.yaml"
    bad.write_text("schools:\n  - uai: 0750003C\npupils:\n  - id: p1\n    first_name: A\n")
    with pytest.raises(InputError, match=r"bad\.yaml:4: pupil: missing key 'last_name'"):
        import_yaml(bad)


@pytest.mark.samples
def test_sample_aaf_full_counts_and_relations(capsys: pytest.CaptureFixture[str]) -> None:
    folder = samples_dir("aaf-2013-full")
    assert main(["annuaire", "check", str(folder), "--format", "json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert (rep["schools"], rep["classes"], rep["pupils"], rep["guardians"]) == (10, 173, 642, 881)
    assert rep["warning_counts"]["pupil_without_guardian"] == 20
    assert sum(s["pupils"] for s in rep["by_school"].values()) == 642
    assert all({"code", "file", "line", "message"} <= set(w) for w in rep["warnings"])
    d, _ = import_aaf([folder])
    first = d.pupils["2605692"]  # spot check, from the file's first request
    assert first.classes == (ClassRef("0059951P", "RUS1TERM"),)  # 52006 -> 0059951P in EtabEducNat
    assert first.guardians == ("2867253", "2867254")
    shared = d.pupils_of_guardian()
    assert any(len(v) > 1 for v in shared.values())  # siblings share guardians
    assert any(len(p.guardians) + len(p.contacts) > 2 for p in d.pupils.values())


@pytest.mark.samples
def test_sample_deltas_apply_with_warnings() -> None:
    d, state = load([str(samples_dir("aaf-2013-full")), str(samples_dir("aaf-2013-delta"))])
    codes = {w.code for w in d.warnings}
    assert "aaf_repaired_tag" in codes
    assert len([w for w in d.warnings if w.code == "aaf_repaired_tag"]) == 6
    assert len(d.pupils) == 646  # 642 + 2 added + 2 modified-unknown (treated as added), deletes unknown
    assert state is not None


@pytest.mark.samples
@pytest.mark.parametrize("folder", ["be1d-2017", "be1d-2014"])
def test_sample_be1d_counts(folder: str) -> None:
    d, _ = load([f"{samples_dir(folder)}@0610001A"])
    rep = report(d, list(d.warnings) + validate(d))
    assert (rep["pupils"], rep["teachers"], rep["classes"]) == (247, 14, 10)
    assert all(p.guardians for p in d.pupils.values())
    assert rep["guardians"] == 469


@pytest.mark.samples
def test_cli_check_text_runs_as_a_process() -> None:
    out = subprocess.run([sys.executable, "-m", "bridge", "annuaire", "check", str(samples_dir("be1d-2017"))],
                         capture_output=True, text=True, check=True).stdout
    assert "247 pupils" in out and "be1d_without_uai" in out
