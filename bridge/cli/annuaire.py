"""`ent-bridge annuaire check SOURCE...`: read, validate and explain a directory export."""

from __future__ import annotations

import argparse
import json
import sys


def _check(args: argparse.Namespace) -> int:
    from bridge.directory.sources import load
    from bridge.directory.validate import report, validate

    directory, _ = load(args.sources, academie=args.academie)
    warnings = list(directory.warnings) + validate(directory)
    rep = report(directory, warnings)
    if args.format == "json":
        json.dump(rep, sys.stdout, ensure_ascii=False, indent=2)
        print()
        return 0
    print(f"{rep['schools']} schools, {rep['classes']} classes, {rep['pupils']} pupils, "
          f"{rep['guardians']} guardians, {rep['teachers']} teachers ({rep['staff']} staff)")
    for uai, s in rep["by_school"].items():
        print(f"  {uai} {s['name']}: {s['classes']} classes, {s['pupils']} pupils, "
              f"{s['guardians']} guardians, {s['teachers']} teachers")
    if warnings:
        print(f"{len(warnings)} warnings:")
        for code, n in rep["warning_counts"].items():
            print(f"  {code}: {n}")
        shown = warnings if args.verbose else warnings[:20]
        for w in shown:
            where = f"{w.file}:{w.line}" if w.file and w.line else (w.file or "-")
            print(f"  {where}: [{w.code}] {w.message}")
        if len(shown) < len(warnings):
            print(f"  … {len(warnings) - len(shown)} more (use --verbose or --format json)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    annuaire = sub.add_parser("annuaire", help="directory (annuaire) commands")
    asub = annuaire.add_subparsers(dest="annuaire_command", metavar="COMMAND", required=True)
    check = asub.add_parser("check", help="read and validate directory exports, print counts and warnings")
    check.add_argument("sources", nargs="+", metavar="SOURCE",
                       help="AAF folder, BE1D folder (PATH@UAI to name its school) or YAML file")
    check.add_argument("--format", choices=("text", "json"), default="text")
    check.add_argument("--academie", help="prefix for AAF ids (unique only within one académie)")
    check.add_argument("--verbose", action="store_true", help="list every warning")
    check.set_defaults(func=_check)
