"""A standby `ent-bridge run` on the same PostgreSQL store waits while another one is active and
takes over when that one is killed (SIGKILL): real processes, real Synapse."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.config import load_config
from tests.conftest import config_file

pytestmark = pytest.mark.synapse


def _live(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_matrix/mau/live", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


async def _until(check: Any, *, what: str) -> None:
    """Wait on a condition; the bound only turns a hang into a failure."""
    for _ in range(1200):
        if check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"never: {what}")


async def test_a_standby_takes_over_when_the_active_bridge_is_killed(homeserver: Any, data_dir: Path,
                                                                    fresh_postgres: str) -> None:
    cfg = config_file(homeserver, data_dir)
    data = yaml.safe_load(cfg.read_text())
    data["database"]["url"] = fresh_postgres
    cfg.write_text(yaml.safe_dump(data))
    port = load_config(cfg).appservice.port
    logs = {n: data_dir.parent / f"{n}.log" for n in ("a", "b")}
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(n: str) -> None:
        with logs[n].open("wb") as out:
            procs[n] = subprocess.Popen([sys.executable, "-m", "bridge", "-c", str(cfg), "run"], stdout=out,
                                        stderr=subprocess.STDOUT)

    try:
        start("a")
        await _until(lambda: _live(port), what="the first bridge answers")
        start("b")
        await _until(lambda: '"lease": "active"' in logs["b"].read_text() and "writer_lease_waiting"
                     in logs["b"].read_text(), what="the second one stands by")
        assert procs["a"].poll() is None and procs["b"].poll() is None
        assert "bridge_active" not in logs["b"].read_text()
        os.kill(procs["a"].pid, signal.SIGKILL)
        procs["a"].wait()
        await _until(lambda: "bridge_active" in logs["b"].read_text() and _live(port),
                     what="the standby took over")
        procs["b"].send_signal(signal.SIGTERM)
        assert procs["b"].wait(timeout=60) == 0
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
