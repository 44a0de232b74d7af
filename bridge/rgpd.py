"""Data-subject rights and the processing record (RGPD art. 15, 17 and 30), from what the bridge holds."""

from __future__ import annotations

import json
from typing import Any

from bridge.config import Config
from bridge.directory.model import Directory
from bridge.rooms.desired import DesiredState
from bridge.store.base import AuditRow

DAY_MS = 86_400_000


def register(config: Config, templates: dict[str, Any]) -> str:
    """The registre des traitements entry, in French, from the configuration and policies."""
    lines = [
        "REGISTRE DES TRAITEMENTS — messagerie sécurisée ENT (ent-bridge)",
        "",
        "Finalité : permettre aux équipes pédagogiques et aux responsables légaux d'échanger dans des salons",
        "  chiffrés de bout en bout (classe, suivi de l'élève, annonces de l'établissement).",
        "Base légale : mission d'intérêt public (art. 6-1-e RGPD) ; arrêté du 30 novembre 2006 modifié (ENT).",
        f"Responsable : l'établissement ou la collectivité qui exploite {config.homeserver.server_name}.",
        "Personnes concernées : personnels (enseignants, direction), responsables légaux. Les élèves ne sont",
        "  pas utilisateurs ; ils apparaissent dans le nom des salons par leur prénom et l'initiale du nom.",
        "Données tenues par le pont : identifiant annuaire, nom et prénom (titres de salons), adresse",
        "  électronique si fournie (rapprochement de compte), identifiant Matrix, appartenance aux salons,",
        "  journal d'audit des actions. Jamais : date de naissance, adresse postale, téléphone (non lus).",
        "Destinataires : les membres de chaque salon ; les administrateurs du serveur pour l'exploitation.",
        "Conservation des messages (par type de salon) :",
    ]
    for name, t in sorted(templates.items()):
        life = f"{t.retention_ms // DAY_MS} jours" if t.retention_ms and t.retention_ms >= DAY_MS else (
            f"{t.retention_ms // 1000} s" if t.retention_ms else "non limitée (à définir)")
        lines.append(f"  - {name} : {life}")
    lines += [
        f"Journal d'audit : {config.audit_retention_days} jours, chaîné par HMAC (inaltérable de fait).",
        "Comptes des personnes parties : retirées des salons à la synchronisation suivante ; données du pont",
        "  effacées sur demande (ent-bridge rgpd erase) et au plus tard 3 mois après le départ.",
        "Sécurité : chiffrement de bout en bout (Megolm), secrets chiffrés au repos, jetons hors journaux.",
        "Droits : accès (ent-bridge rgpd export), effacement (ent-bridge rgpd erase), auprès du DPO.",
    ]
    return "\n".join(lines)


def export(person_id: str | None, mxid: str | None, *, directory: Directory, desired: DesiredState,
           audit: list[AuditRow], pseudonym: str | None, retention: dict[str, int | None],
           on_homeserver: list[dict[str, object]], mutes: list[tuple[str, str, int]]) -> dict[str, Any]:
    """Everything the bridge holds or derives about one person (pure): their directory data,
    the rooms the directory entitles them to, where the homeserver has them (archived rooms
    included), their mutes, and the audit entries about them."""
    held: dict[str, Any] = {}
    if person_id is None:
        pass
    elif person_id in directory.guardians:
        g = directory.guardians[person_id]
        held = {"kind": "guardian", "first_name": g.first_name, "last_name": g.last_name, "email": g.email,
                "legal_guardian_of": [{"first_name": p.first_name, "last_name_initial": p.last_name[:1]}
                                      for p in directory.pupils.values() if person_id in p.guardians]}
    elif person_id in directory.staff:
        s = directory.staff[person_id]
        held = {"kind": "staff", "first_name": s.first_name, "last_name": s.last_name, "email": s.email,
                "classes": [str(r) for r in s.classes], "head_teacher_of": [str(r) for r in s.head_teacher_of],
                "director_of": list(s.director_of)}
    rooms = []
    for room in desired.rooms.values():
        if mxid and mxid in room.members:
            level = room.power_levels.get("users", {}).get(mxid, 0)
            rooms.append({"room": room.name, "kind": room.template,
                          "role": {100: "administrateur", 50: "modérateur"}.get(level, "membre"),
                          "message_retention_days": (retention.get(room.template) or 0) // DAY_MS or None})
    actions = []
    names = {n for n in (mxid, pseudonym) if n}  # entries older than pseudonyms named the id itself
    for row in audit:
        body = json.loads(row.body)
        if body.get("subject") in names:
            actions.append({k: body[k] for k in ("ts", "action", "reason") if k in body})
    return {"person_id": person_id, "matrix_id": mxid, "directory_data": held, "rooms": sorted(
        rooms, key=lambda r: r["room"]), "on_homeserver": on_homeserver,
        "mutes": [{"room_id": r, "until_ms": until} for r, u, until in mutes if u == mxid],
        "actions_about_them": actions}
