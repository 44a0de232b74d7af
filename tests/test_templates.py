"""Room templates: shipped defaults load; mistakes are reported with file, line and column."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.errors import InputError
from bridge.rooms.templates import load_templates

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_templates() -> None:
    t = load_templates(ROOT / "policies")
    assert set(t) >= {"class", "family", "school", "staff"}
    assert t["class"].roles == {"teachers": 50, "head_teacher": 50, "guardians": 0}
    assert t["family"].scope == "pupil" and t["family"].encrypted and t["family"].history_visibility == "joined"
    assert t["school"].events_default == 50 and t["school"].roles["director"] == 100
    assert "en" in t["class"].room_name
    assert t["family"].retention_ms == 180 * 86_400_000 and t["class"].retention_ms == 365 * 86_400_000
    # The school's moderators room: director and head teachers, where moderation reports go.
    assert t["moderators"].reports and t["moderators"].scope == "school" and not t["class"].reports
    assert t["moderators"].roles == {"director": 100, "head_teachers": 50}


BASE = """templates:
  class:
    scope: class
    name: "Classe {class_label}"
    roles:
      teachers: 50
      guardians: 0
"""


@pytest.mark.parametrize("edit, message, line", [
    (("scope: class", "scope: classe"), "scope must be one of", 3),
    (("guardians: 0", "guardians: 0\n      pupils: 0"), "role 'pupils' does not exist", 8),
    (("teachers: 50", "teachers: 150"), "power level must be an integer from 0 to 100", 6),
    (("{class_label}", "{pupil_first_name}"), "unknown placeholder(s) pupil_first_name", 4),
    (("    roles:", "    encrypted: false\n    roles:"), "must be end-to-end encrypted", 5),
    (("    roles:", "    colour: blue\n    roles:"), "unknown key 'colour'", 5),
    (("name: \"Classe {class_label}\"", "name: [unclosed"), "invalid YAML", None),
    (("    roles:", "    retention: {max_lifetime: 3 weeks}\n    roles:"), "max_lifetime must be a duration", 5),
    (("    roles:", "    reports: true\n    roles:"), "only a school-scope room can receive reports", 5),
])
def test_template_errors_name_file_line(tmp_path: Path, edit: tuple[str, str], message: str,
                                        line: int | None) -> None:
    (tmp_path / "rooms.yaml").write_text(BASE.replace(*edit, 1))
    with pytest.raises(InputError) as err:
        load_templates(tmp_path)
    assert message in str(err.value)
    assert err.value.file == str(tmp_path / "rooms.yaml")
    if line is not None:
        assert err.value.line == line
    assert "column" in str(err.value)
