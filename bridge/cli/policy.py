"""`ent-bridge policy check [DIR]`, `policy explain TEMPLATE`, `policy schema`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bridge.policy.folder import check_folder


def _folder(args: argparse.Namespace) -> Path:
    if args.dir:
        return Path(args.dir)
    from bridge.config import load_config

    return load_config(args.config).policies_dir


def _check(args: argparse.Namespace) -> int:
    templates, policies = check_folder(_folder(args))
    print(f"policies OK: {len(templates)} room templates, {len(policies.profiles)} moderation profiles")
    return 0


def _explain(args: argparse.Namespace) -> int:
    templates, policies = check_folder(_folder(args))
    t = templates.get(args.template)
    if t is None:
        print(f"ent-bridge: error: no template {args.template!r} (have: {', '.join(sorted(templates))})",
              file=sys.stderr)
        return 1
    roles = ", ".join(f"{r} ({'admin' if lvl == 100 else 'modérateur' if lvl >= 50 else 'membre'})"
                      for r, lvl in t.roles.items())
    scope = {"school": "école", "class": "classe", "pupil": "élève"}[t.scope]
    print(f"Salon « {t.name} » (un par {scope})")
    print(f"  nom : {t.room_name.get('fr')}")
    print(f"  membres : {roles}")
    print(f"  chiffré de bout en bout : {'oui' if t.encrypted else 'non'} ; "
          f"historique visible : {t.history_visibility}")
    print(f"  écrire : {'modérateurs seulement' if t.events_default >= 50 else 'tous les membres'} ; "
          f"@room : {t.room_mention}")
    if t.reports:
        print("  reçoit les signalements de modération de l'établissement (jamais le contenu des messages)")
    if t.retention_ms:
        print(f"  conservation des messages : {t.retention_ms // 86_400_000 or t.retention_ms // 1000} "
              f"{'jours' if t.retention_ms >= 86_400_000 else 's'}")
    profile = policies.profiles.get(t.moderation or "")
    if profile is None:
        print("  modération : aucune")
        return 0
    print(f"  modération « {profile.name} » (exemptés : pouvoir >= {profile.exempt_power}) :")
    if not profile.content_inspection:
        print("    lecture du contenu désactivée : le salon est tenu par un compte sans appareil (aucune clé "
              "ne lui est partagée, le bot n'y est pas) ; seules les protections sur les métadonnées "
              "s'appliquent (flood, heures calmes, récidive, intrus) et les avis du pont n'y sont pas chiffrés")
    for name in ("banned_words", "flood", "media", "links", "mentions", "quiet_hours", "fan_out", "names"):
        p = getattr(profile, name)
        if p is None:
            continue
        settings = {k: (v.strftime("%H:%M") if hasattr(v, "strftime") else v) for k, v in p.__dict__.items()
                    if k not in ("action", "words")}
        if name == "banned_words":
            settings = {"mots": len(p.words)}
        elif name == "names":
            settings = {"titres réservés": len(p.reserved)}
        print(f"    - {name} -> {', '.join(p.action)}  {settings}")
    s = profile.strikes
    print(f"    - récidive : {s.threshold} fois en {s.window_hours:g} h -> muet {s.mute_minutes} min")
    return 0


def _schema(args: argparse.Namespace) -> int:
    from bridge.policy import access, loader

    json.dump((access if args.access else loader).json_schema(), sys.stdout, indent=2, ensure_ascii=False)
    print()
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("policy", help="room templates and moderation policies")
    psub = p.add_subparsers(dest="policy_command", metavar="COMMAND", required=True)
    c = psub.add_parser("check", help="validate a policies folder (errors with file:line:column)")
    c.add_argument("dir", nargs="?", help="folder (default: policies.dir of the config)")
    c.set_defaults(func=_check)
    e = psub.add_parser("explain", help="what applies to one room template")
    e.add_argument("template")
    e.add_argument("--dir", help="folder (default: policies.dir of the config)")
    e.set_defaults(func=_explain)
    s = psub.add_parser("schema", help="print the JSON Schema of moderation policy files")
    s.add_argument("--access", action="store_true", help="the schema of access.yaml instead")
    s.set_defaults(func=_schema)
