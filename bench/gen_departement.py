"""Generate a synthetic département-sized AAF export (fictitious people) for the benchmarks.

    python bench/gen_departement.py OUT_DIR [--pupils 150000] [--guardians 250000] [--teachers 10000]
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge.directory.importers.aaf_writer import write_export
from bridge.directory.model import ClassRef, Directory, Guardian, Pupil, School, SchoolClass, Staff

FIRST = ["Léa", "Hugo", "Chloé", "Lucas", "Inès", "Nathan", "Zoé", "Adam", "Manon", "Noé", "Jade", "Louis"]
LAST = ["Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand", "Leroy", "Moreau",
        "Simon", "Laurent", "Lefèvre", "Michel", "Garcia", "Haddad", "N'Diaye", "Nguyen"]
LEVELS = ["SIXIEME", "CINQUIEME", "QUATRIEME", "TROISIEME", "SECONDE", "PREMIERE", "TERMINALE"]


def generate(*, pupils: int, guardians: int, teachers: int, seed: int = 7) -> Directory:
    rnd = random.Random(seed)
    n_schools = max(1, pupils // 600)
    schools = {f"{9000000 + i:07d}X": School(f"{9000000 + i:07d}X", f"COLLEGE SYNTHETIQUE {i}")
               for i in range(n_schools)}
    uais = sorted(schools)
    classes: dict[ClassRef, SchoolClass] = {}
    for uai in uais:
        for level_i, level in enumerate(LEVELS[:4]):
            for letter in "ABCDEF":
                ref = ClassRef(uai, f"{6 - level_i}{letter}")
                classes[ref] = SchoolClass(ref, ref.code, level)
    refs = sorted(classes)
    by_school = {u: [r for r in refs if r.uai == u] for u in uais}
    gids = [f"G{i}" for i in range(guardians)]
    guard = {g: Guardian(g, rnd.choice(FIRST), rnd.choice(LAST), None) for g in gids}
    out: dict[str, Pupil] = {}
    gi = 0
    for i in range(pupils):
        uai = uais[i % n_schools]
        k = 1 if rnd.random() < 0.35 else 2  # ~1.67 guardian per pupil, some shared by siblings
        mine = tuple(sorted(gids[(gi + j) % guardians] for j in range(k)))
        gi += k if rnd.random() > 0.1 else 0
        out[f"E{i}"] = Pupil(f"E{i}", rnd.choice(FIRST), rnd.choice(LAST), (rnd.choice(by_school[uai]),), mine)
    staff = {}
    for i in range(teachers):
        uai = uais[i % n_schools]
        taught = tuple(sorted(set(rnd.sample(by_school[uai], k=min(4, len(by_school[uai]))))))
        staff[f"T{i}"] = Staff(f"T{i}", rnd.choice(FIRST), rnd.choice(LAST), None, taught, (), (), (), (uai,),
                               teacher=True)
    return Directory(schools, classes, out, guard, staff)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--pupils", type=int, default=150_000)
    ap.add_argument("--guardians", type=int, default=250_000)
    ap.add_argument("--teachers", type=int, default=10_000)
    args = ap.parse_args()
    d = generate(pupils=args.pupils, guardians=args.guardians, teachers=args.teachers)
    write_export(d, args.out, per_file=20_000, realistic=True)
    size = sum(p.stat().st_size for p in args.out.glob("*.xml"))
    print(f"wrote {len(d.pupils)} pupils, {len(d.guardians)} guardians, {len(d.staff)} staff, "
          f"{len(d.schools)} schools in {args.out} ({size / 1e6:.0f} MB)")


if __name__ == "__main__":
    main()
