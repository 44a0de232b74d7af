"""Run every benchmark in turn (`make bench`). Each prints its measurements and target ratios."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

for script in ("bench_import.py", "bench_rooms.py", "bench_decisions.py",
               "bench_decisions_encrypted.py", "bench_memory.py", "bench_latency.py", "bench_access.py",
               "bench_workers.py", "bench_command.py"):
    print(f"== {script}", flush=True)
    subprocess.run([sys.executable, str(HERE / script)], check=False)
