"""`make demo` end to end (its own Synapse in a temp folder), run twice: the second run is a no-op."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.synapse


def test_demo_twice(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "bridge.demo", "--workdir", str(tmp_path / "demo"), "--exit"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert "Rooms: 3 class, 60 family, 1 moderators, 1 school, 1 space, 1 staff" in first.stdout
    assert "A parent:   @" in first.stdout and "A teacher:  @" in first.stdout
    # A teacher's announcement waits in the printed parent's class room, for them to confirm.
    assert "posted an announcement the families are asked to confirm" in first.stdout
    import json
    import sqlite3

    db = sqlite3.connect(tmp_path / "demo" / "data" / "bridge.db")
    (value,) = db.execute("SELECT value FROM kv WHERE key = 'announcements'").fetchone()
    db.close()
    assert len(json.loads(value)) == 1  # the bot decrypted it and asked the families
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    assert "Plan: nothing to do" in second.stdout
    assert "0 created" in second.stdout
    # Synapse was stopped by PID both times: nothing listens on its port any more.
    pid_file = tmp_path / "demo" / "synapse" / "homeserver.pid"
    assert not pid_file.exists() or not Path(f"/proc/{pid_file.read_text().strip()}").exists()
    # The demo's homeserver has the school settings and the access module, and the bridge's
    # secrets are its own: `ent-bridge doctor` finds nothing (a library run, no CLI umask).
    demo = tmp_path / "demo"
    doctor = subprocess.run([sys.executable, "-m", "bridge", "-c", str(demo / "config.yaml"), "doctor",
                             str(demo / "synapse" / "homeserver.yaml")], capture_output=True, text=True, timeout=60)
    assert doctor.returncode == 0 and "no risky setting found" in doctor.stdout, doctor.stdout + doctor.stderr
