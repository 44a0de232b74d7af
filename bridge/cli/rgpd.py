"""`ent-bridge rgpd register|export PERSON|erase PERSON`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime


def _register(args: argparse.Namespace) -> int:
    from bridge.config import load_config
    from bridge.rgpd import register
    from bridge.rooms.templates import load_templates

    config = load_config(args.config)
    print(register(config, load_templates(config.policies_dir)))
    return 0


def _who(person: str, identities: dict[str, str]) -> tuple[str | None, str | None]:
    """(person id, Matrix id) from either."""
    if person.startswith("@"):
        return next((pid for pid, m in identities.items() if m == person), None), person
    return person, identities.get(person)


async def _export(args: argparse.Namespace) -> int:
    from bridge.audit import for_config as audit_for_config
    from bridge.cli.common import config_and_store
    from bridge.directory.sources import load
    from bridge.erasure import memberships
    from bridge.matrix.appservice_api import AppserviceAPI
    from bridge.reconcile.inputs import desired_state
    from bridge.rgpd import export
    from bridge.rooms.templates import load_templates

    async with config_and_store(args) as (config, store):
        directory, _ = load(args.sources or list(config.directory_sources), academie=config.academie,
                            school_names=config.school_names)
        known = await store.identities()
        desired, identities = desired_state(config, directory, known, now=datetime.now(UTC))
        person_id, mxid = _who(args.person, {**known, **identities})
        if mxid is None:
            print(f"ent-bridge: error: no person {args.person!r} in the directory or the bridge's data",
                  file=sys.stderr)
            return 1
        audit = await store.audit_rows()
        mutes = await store.mutes()
        api = AppserviceAPI(base_url=config.homeserver.url, as_token=config.appservice.as_token)
        try:  # what the homeserver holds, not only what the directory says it should
            where = await memberships(api, store, mxid, actors=(config.bot_user_id, config.keyless_user_id))
        finally:
            await api.close()
        pseudonym = audit_for_config(config, store).pseudonym(mxid)
    templates = load_templates(config.policies_dir)
    data = export(person_id, mxid, directory=directory, desired=desired, audit=audit, pseudonym=pseudonym,
                  retention={k: t.retention_ms for k, t in templates.items()}, on_homeserver=where, mutes=mutes)
    json.dump(data, sys.stdout, ensure_ascii=False, indent=2)
    print()
    return 0


async def _erase(args: argparse.Namespace) -> int:
    from bridge.audit import for_config as audit_for_config
    from bridge.config import load_config
    from bridge.directory.sources import load
    from bridge.erasure import erase_person, remove_from_rooms
    from bridge.matrix.appservice_api import AppserviceAPI
    from bridge.store import open_store

    config = load_config(args.config)
    directory, _ = load(args.sources or list(config.directory_sources), academie=config.academie,
                        school_names=config.school_names)
    store = await open_store(config.database_url)
    try:
        identities = await store.identities()
        person_id, mxid = _who(args.person, identities)
        if person_id in directory.guardians or person_id in directory.staff:
            print("ent-bridge: error: this person is still in the directory; once the directory no longer lists "
                  "them, the next sync removes them from every room, then erase their data", file=sys.stderr)
            return 1
        if person_id is None or mxid is None:
            print("nothing held on that person")
            return 0
        # First out of the rooms still holding them (an archived room's reading period is for
        # people who asked nothing), then the data: a failure leaves them known, and retried.
        api = AppserviceAPI(base_url=config.homeserver.url, as_token=config.appservice.as_token)
        try:
            removed = await remove_from_rooms(api, store, mxid, actors=(config.bot_user_id, config.keyless_user_id),
                                              reason="RGPD : effacement à la demande de la personne")
        finally:
            await api.close()
        from bridge.matrix.accounts import account_admin

        admin = await account_admin(config)  # Synapse's admin API, or MAS's
        try:
            deactivated = await erase_person(store, person_id, mxid, accounts=admin)
        finally:
            if admin is not None:
                await admin.close()
        # The entry says that an erasure happened, never whose.
        await audit_for_config(config, store).append(actor="admin", action="rgpd_erase",
                                                           reason="data-subject erasure request",
                                                           detail={"account_deactivated": deactivated,
                                                                   "rooms_left": len(removed)})
    finally:
        await store.close()
    print(f"erased the bridge's data on that person, removed from {len(removed)} room(s)"
          + (" and the account it had created" if deactivated else
             " (the account was not created by the bridge: deactivate it where it was made)"))
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("rgpd", help="processing record and data-subject rights")
    rsub = p.add_subparsers(dest="rgpd_command", metavar="COMMAND", required=True)
    r = rsub.add_parser("register", help="print the processing record (registre des traitements)")
    r.set_defaults(func=_register)
    for name, func, text in (("export", _export, "print, as JSON, all the bridge holds on a person"),
                             ("erase", _erase, "erase the bridge's own data on a person who left")):
        e = rsub.add_parser(name, help=text)
        e.add_argument("person", metavar="PERSON", help="directory id of the person, or their Matrix id")
        e.add_argument("sources", nargs="*", metavar="SOURCE", help="directory sources (default: from the config)")
        e.set_defaults(func=lambda a, f=func: asyncio.run(f(a)))
