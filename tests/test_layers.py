"""The layers hold: import contracts (import-linter) and no clock read inside the pure core."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PURE = ["bridge/directory", "bridge/rooms", "bridge/policy", "bridge/reconcile/actions.py",
        "bridge/reconcile/planner.py", "bridge/reconcile/guards.py", "bridge/reconcile/render.py",
        "bridge/reconcile/observed.py", "bridge/reconcile/requests.py"]
CLOCK_READS = {("time", "time"), ("time", "monotonic"), ("datetime", "now"), ("datetime", "utcnow"),
               ("date", "today"), ("time", "sleep"), ("asyncio", "sleep")}


def _files() -> list[Path]:
    out: list[Path] = []
    for part in PURE:
        path = ROOT / part
        out += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return out


def test_pure_core_reads_no_clock() -> None:
    """Time comes in as an argument: a planner that read the clock could not be replayed."""
    found = [f"{path.relative_to(ROOT)}:{node.lineno} {node.value.id}.{node.attr}"
             for path in _files() for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
             if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
             and (node.value.id, node.attr) in CLOCK_READS]
    assert not found, found


def test_import_contracts_are_kept() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-2000:]
    assert "3 kept, 0 broken" in result.stdout
