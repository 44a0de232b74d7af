"""What a sync plans from: the directory's people, their Matrix ids, the desired rooms, accounts."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Protocol

import yaml

from bridge.config import Config
from bridge.directory.model import Directory
from bridge.errors import InputError
from bridge.policy.folder import check_folder
from bridge.reconcile.actions import ProvisionAccount
from bridge.rooms.desired import DesiredState, Settings, compute
from bridge.rooms.identity import IdentityRules, Person, map_identities
from bridge.rooms.templates import keyless_templates


class AccountLookup(Protocol):
    """Read side of the homeserver's account admin (Synapse's admin API today)."""

    async def users_by_email(self, emails: list[str], *, concurrency: int = 8) -> dict[str, str]: ...
    async def user_exists(self, user_id: str) -> bool: ...


@contextmanager
def gc_paused() -> Iterator[None]:
    """Planning a département allocates millions of small objects that all live until the
    end: the cyclic collector would re-scan them again and again for nothing (halves the time)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def persons(d: Directory) -> list[Person]:
    """Everyone who may get a Matrix account: staff and legal guardians (never pupils)."""
    out = [Person(s.id, s.first_name, s.last_name, s.email) for s in d.staff.values()]
    out += [Person(g.id, g.first_name, g.last_name, g.email) for g in d.guardians.values()]
    return out


def _explicit(config: Config) -> dict[str, str]:
    path = config.identity.mapping_file
    if path is None:
        return {}
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict) or not all(isinstance(v, str) and v.startswith("@") for v in data.values()):
        raise InputError("must map person ids to Matrix ids ('@user:server')", file=str(path))
    return {str(k): v for k, v in data.items()}


def desired_state(config: Config, directory: Directory, known: Mapping[str, str], *, now: datetime,
                  by_email: Mapping[str, str] | None = None) -> tuple[DesiredState, dict[str, str]]:
    templates, policies = check_folder(config.policies_dir)
    keyless = keyless_templates(templates, {n: p.content_inspection for n, p in policies.profiles.items()})
    rules = IdentityRules(server_name=config.homeserver.server_name,
                          localpart_template=config.identity.localpart_template,
                          explicit=_explicit(config), reserved_prefix=config.appservice.namespace_prefix)
    settings = Settings(bot_user_id=config.bot_user_id, key_secret=config.rooms.key_secret,
                        alias_prefix=config.appservice.namespace_prefix, language=config.rooms.language,
                        keyless_user_id=config.keyless_user_id, keyless_templates=keyless)
    with gc_paused():
        identities = map_identities(persons(directory), rules=rules, known=dict(known), by_email=dict(by_email or {}))
        return compute(directory, templates, identities, settings=settings, now=now), identities


async def match_emails(config: Config, directory: Directory, known: Mapping[str, str],
                       accounts: AccountLookup | None) -> tuple[dict[str, str], list[str]]:
    """Existing accounts by e-mail, for people the bridge has no account for yet."""
    emails = [p.email.lower() for p in persons(directory) if p.email and p.id not in known]
    if not config.identity.match_email or not emails:
        return {}, []
    if accounts is None:
        return {}, [(f"{len(emails)} people have an e-mail but existing accounts can't be looked up "
                     "without homeserver.admin_token: the localpart template is used for them")]
    return await accounts.users_by_email(emails), []


async def missing_accounts(config: Config, directory: Directory, identities: Mapping[str, str],
                           known: Mapping[str, str], accounts: AccountLookup | None,
                           ) -> tuple[list[ProvisionAccount], list[str]]:
    """Accounts to create: only for people new to the bridge (known ones were handled before)."""
    if not config.identity.provision:
        return [], []
    new = sorted({(mxid, pid) for pid, mxid in identities.items() if pid not in known})
    if accounts is None:
        return [], [(f"provisioning needs homeserver.admin_token: {len(new)} accounts may be missing "
                     "and are not created")] if new else []
    sem = asyncio.Semaphore(config.rooms.concurrency)

    async def exists(user: str) -> bool:
        async with sem:
            return await accounts.user_exists(user)

    flags = await asyncio.gather(*(exists(u) for u, _ in new))
    sso = config.identity.sso_provider
    out = []
    for (user, pid), ok in zip(new, flags, strict=True):
        if ok:
            continue
        p = directory.staff.get(pid) or directory.guardians.get(pid)
        if p is None:  # pragma: no cover - identities come from the directory's people
            continue
        out.append(ProvisionAccount(pid, user, "no account yet for a person of the directory",
                                    f"{p.first_name} {p.last_name}", p.email, (sso, pid) if sso else None))
    return out, []
