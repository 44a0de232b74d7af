"""Benchmark: import of a département-sized AAF export. Prints time and peak RSS against the
targets (< 60 s, < 1.5 GB) as ratios (< 1.0 meets the target). Not a test.

    python bench/bench_import.py [--pupils 150000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGET_S, TARGET_RSS_MB = 60.0, 1500.0

CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
from pathlib import Path
from bridge.directory.importers.aaf import import_aaf
from bridge.directory.validate import validate
t = time.perf_counter()
d, _ = import_aaf([Path({folder!r})])
w = validate(d)
elapsed = time.perf_counter() - t
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"seconds": elapsed, "rss_mb": rss, "pupils": len(d.pupils), "guardians": len(d.guardians),
                  "staff": len(d.staff), "warnings": len(w) + len(d.warnings)}}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pupils", type=int, default=150_000)
    ap.add_argument("--guardians", type=int, default=250_000)
    ap.add_argument("--teachers", type=int, default=10_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, str(HERE / "gen_departement.py"), tmp, "--pupils", str(args.pupils),
                        "--guardians", str(args.guardians), "--teachers", str(args.teachers)], check=True)
        # A fresh process, pinned to one core, so peak RSS and time are the import's alone.
        cmd = [sys.executable, "-c", CHILD.format(root=str(HERE.parent), folder=tmp)]
        if sys.platform.startswith("linux"):
            cmd = ["taskset", "-c", "0", *cmd]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    print(f"import: {res['pupils']} pupils, {res['guardians']} guardians, {res['staff']} staff, "
          f"{res['warnings']} warnings")
    print(f"time      {res['seconds']:.1f} s   target {TARGET_S:.0f} s   ratio {res['seconds'] / TARGET_S:.2f}")
    print(f"peak RSS  {res['rss_mb']:.0f} MB  target {TARGET_RSS_MB:.0f} MB ratio {res['rss_mb'] / TARGET_RSS_MB:.2f}")


if __name__ == "__main__":
    main()
