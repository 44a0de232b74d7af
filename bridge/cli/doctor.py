"""`ent-bridge doctor HOMESERVER_YAML`: risky homeserver settings and open secret files."""

from __future__ import annotations

import argparse
from pathlib import Path

from bridge.errors import InputError


def _doctor(args: argparse.Namespace) -> int:
    from bridge.config import load_config
    from bridge.doctor import file_findings, homeserver_findings
    from bridge.yamlutil import clean, load_with_lines

    hs = clean(load_with_lines(Path(args.homeserver)))
    if not isinstance(hs, dict):
        raise InputError("expected a mapping (homeserver.yaml)", file=args.homeserver)
    findings = homeserver_findings(hs)
    if Path(args.config).exists():
        config = load_config(args.config)
        files = {"the bridge's config": config.path}
        if config.database_url.startswith("sqlite:///"):
            files["the bridge's database"] = Path(config.database_url[len("sqlite:///"):])
        if config.audit_head_file is not None:
            files["the audit head"] = config.audit_head_file
        files.update({f"the bot's crypto store {p.name}": p for p in sorted(config.bot.store_dir.glob("*.db"))})
        files.update({f"appservice registration {p}": Path(p) for p in hs.get("app_service_config_files") or []
                      if isinstance(p, str)})
        findings += file_findings(files, {"the bot's crypto store folder": config.bot.store_dir})
    for f in findings:
        print(f"! {f.key}: {f.why}\n    -> {f.fix}")
    print(f"{len(findings)} finding(s)" if findings else "no risky setting found")
    return 1 if findings else 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("doctor", help="risky homeserver settings and open secret files (exit 1 if any)")
    p.add_argument("homeserver", help="Synapse's homeserver.yaml")
    p.set_defaults(func=_doctor)
