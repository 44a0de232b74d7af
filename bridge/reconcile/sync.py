"""One sync run (imperative shell): directory -> desired -> observe -> plan -> guard -> apply."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import gc
import json
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import yaml

from bridge.audit import AuditLog
from bridge.config import Config
from bridge.directory.model import Directory
from bridge.directory.sources import load
from bridge.errors import InputError
from bridge.logging import get_logger
from bridge.matrix.admin_api import SynapseAdmin
from bridge.matrix.appservice_api import AppserviceAPI
from bridge.reconcile import guards, planner
from bridge.reconcile.actions import Plan
from bridge.reconcile.executor import ApplyReport, RoomExecutor
from bridge.reconcile.observed import ObservedState
from bridge.reconcile.observer import ObserveStats
from bridge.rooms.desired import DesiredState, Settings, compute
from bridge.rooms.identity import IdentityRules, Person, map_identities
from bridge.rooms.leavers import due_for_erasure, leaver_changes
from bridge.policy.loader import load_policies
from bridge.rooms.templates import keyless_templates, load_templates
from bridge.store.base import Store

DIRECTORY_SIZE_KEY = "directory_size"
log = get_logger(component="sync")


@dataclass(frozen=True)
class SyncResult:
    plan: Plan
    verdict: guards.Verdict
    directory_size: int
    report: ApplyReport | None = None
    observed: ObserveStats | None = None  # how many rooms were read from the homeserver
    residual: Plan | None = None  # what a plan made right after the apply still finds to do


@contextmanager
def gc_paused():  # type: ignore[no-untyped-def]
    """Planning a département allocates millions of small objects that all live until the
    end: the cyclic collector would re-scan them again and again for nothing (halves the time)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


async def _match_emails(config: Config, directory: Directory, known: dict[str, str], admin: SynapseAdmin | None,
                        *, offline: bool) -> tuple[dict[str, str], list[str]]:
    """Existing accounts by e-mail, for people the bridge has no account for yet."""
    emails = [p.email.lower() for p in persons(directory) if p.email and p.id not in known]
    if not config.identity.match_email or not emails:
        return {}, []
    if admin is None or offline:
        return {}, [f"{len(emails)} people have an e-mail but existing accounts can't be looked up "
                    "without homeserver.admin_token: the localpart template is used for them"]
    return await admin.users_by_email(emails), []


async def _missing_accounts(config: Config, identities: dict[str, str], known: dict[str, str],
                            admin: SynapseAdmin | None, *, offline: bool) -> tuple[frozenset[str], list[str]]:
    """Accounts to create: only for people new to the bridge (known ones were handled before)."""
    if not config.identity.provision:
        return frozenset(), []
    new = sorted({mxid for pid, mxid in identities.items() if pid not in known})
    if admin is None or offline:
        return frozenset(), [f"provisioning needs homeserver.admin_token: {len(new)} accounts may be missing "
                             "and are not created"] if new else []
    sem = asyncio.Semaphore(config.rooms.concurrency)

    async def exists(user: str) -> bool:
        async with sem:
            return await admin.user_exists(user)

    flags = await asyncio.gather(*(exists(u) for u in new))
    return frozenset(u for u, ok in zip(new, flags) if not ok), []


def _person_of(directory: Directory, pid: str) -> Person:
    p = directory.staff.get(pid) or directory.guardians.get(pid)
    assert p is not None
    return Person(p.id, p.first_name, p.last_name, p.email)


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


def desired_state(config: Config, directory: Directory, known: dict[str, str], *, now: datetime,
                  by_email: dict[str, str] | None = None) -> tuple[DesiredState, dict[str, str]]:
    templates = load_templates(config.policies_dir)
    profiles = load_policies(config.policies_dir).profiles
    keyless = keyless_templates(templates, {n: p.content_inspection for n, p in profiles.items()})
    rules = IdentityRules(server_name=config.homeserver.server_name,
                          localpart_template=config.identity.localpart_template,
                          explicit=_explicit(config), reserved_prefix=config.appservice.namespace_prefix)
    settings = Settings(bot_user_id=config.bot_user_id, key_secret=config.rooms.key_secret,
                        alias_prefix=config.appservice.namespace_prefix, language=config.rooms.language,
                        keyless_user_id=config.keyless_user_id, keyless_templates=keyless)
    with gc_paused():
        identities = map_identities(persons(directory), rules=rules, known=known, by_email=by_email or {})
        return compute(directory, templates, identities, settings=settings, now=now), identities


async def run_sync(config: Config, sources: list[str], *, store: Store, api: AppserviceAPI, apply: bool,
                   allow_mass_removal: bool = False, offline: bool = False, full_observe: bool = False,
                   now: datetime | None = None) -> SyncResult:
    now = now or datetime.now(timezone.utc)
    directory, _ = load(sources, academie=config.academie)
    known = await store.identities()
    admin = SynapseAdmin(base_url=config.homeserver.url, token=config.homeserver.admin_token) \
        if config.homeserver.admin_token else None
    try:
        by_email, admin_notes = await _match_emails(config, directory, known, admin, offline=offline)
        desired, identities = desired_state(config, directory, known, now=now, by_email=by_email)
        missing, more = await _missing_accounts(config, identities, known, admin, offline=offline)
    finally:
        if admin is not None:
            await admin.close()
    admin_notes += more
    if admin_notes:
        desired = dataclasses.replace(desired, warnings=desired.warnings + tuple(admin_notes))
    audit = AuditLog(store, key=config.audit_key)
    executor = RoomExecutor(api=api, store=store, bot=config.bot_user_id, keyless=config.keyless_user_id,
                            server_name=config.homeserver.server_name,
                            concurrency=config.rooms.concurrency, language=config.rooms.language, audit=audit,
                            grace_days=config.rooms.archive_grace_days, now_ms=int(now.timestamp() * 1000))
    observe = functools.partial(executor.observe, desired.rooms, now_ms=int(now.timestamp() * 1000),
                                grace_ms=config.rooms.archive_grace_days * 86_400_000,
                                full_every_ms=int(config.rooms.full_observe_hours * 3_600_000))
    observed = ObservedState() if offline else await observe(full=full_observe, save=apply)
    stats = executor.observe_stats
    now_ms = int(now.timestamp() * 1000)
    present = set(directory.staff) | set(directory.guardians)
    leavers = await store.leavers()
    provisioned = set((await store.provisioned()))
    erase = tuple((pid, known[pid], known[pid] in provisioned)
                  for pid in due_for_erasure(leavers, now_ms=now_ms,
                                             grace_ms=config.identity.erase_after_days * 86_400_000)
                  if pid in known and pid not in present)
    with gc_paused():
        plan = planner.plan(desired, observed, bot=config.bot_user_id, keyless=config.keyless_user_id,
                            language=config.rooms.language,
                            missing_accounts=missing, erase=erase)
    size = len(directory.pupils) + len(directory.guardians) + len(directory.staff)
    previous = await store.get_value(DIRECTORY_SIZE_KEY)
    limits = guards.Limits(config.rooms.max_removal_share, config.rooms.max_removals,
                           config.rooms.max_directory_shrink)
    verdict = guards.check(plan, observed, limits=limits, directory_size=size,
                           previous_directory_size=int(previous) if previous else None,
                           allow_mass_removal=allow_mass_removal)
    log.info("sync_planned", actions=len(plan.actions), summary=json.dumps(plan.summary()), guard_ok=verdict.ok)
    if apply and not verdict.ok:
        await audit.append(actor="ent-bridge", action="plan_refused", reason="; ".join(verdict.reasons),
                           detail={"summary": plan.summary()})
    if not apply or not verdict.ok:
        return SyncResult(plan, verdict, size, observed=stats)
    gone, back = leaver_changes(known, present, leavers, now_ms=now_ms)
    if plan.is_empty():
        await store.set_value(DIRECTORY_SIZE_KEY, str(size))  # local only: no homeserver write
        await store.set_leavers(add=gone, remove=back)
        return SyncResult(plan, verdict, size, ApplyReport(), observed=stats, residual=plan)
    # The bot owns the rooms; a standalone `sync --apply` may run before `run` ever did.
    await api.register_user(config.bot.localpart)
    if any(d.owner for d in desired.rooms.values()):
        await api.register_user(config.bot.keyless_localpart)
        await api.ensure_display_name(config.keyless_user_id, config.bot.keyless_display_name)
    if (missing or any((a.detail or {}).get("deactivate") for a in plan.actions)) and config.homeserver.admin_token:
        executor.admin = SynapseAdmin(base_url=config.homeserver.url, token=config.homeserver.admin_token)
        executor.people = {mxid: _person_of(directory, pid) for pid, mxid in identities.items()}
        executor.sso_provider = config.identity.sso_provider
    try:
        report = await executor.apply(plan)
    finally:
        if executor.admin is not None:
            await executor.admin.close()
    # People keep the id they were given, even if a homonym shows up later.
    new = {pid: mxid for pid, mxid in identities.items() if known.get(pid) != mxid}
    if new:
        await store.put_identities(new)
    if not report.failed:
        await store.set_value(DIRECTORY_SIZE_KEY, str(size))
        # Departures are dated only by an applied sync: a refused, truncated export dates nobody.
        await store.set_leavers(add=gone, remove=back)
    residual = None
    if not report.failed:
        # Verify: re-observe what the apply touched (the homeserver names those rooms) and plan
        # again. It should find nothing; and the cache is then fresh for the next sync.
        residual = planner.plan(desired, await observe(), bot=config.bot_user_id, keyless=config.keyless_user_id,
                                language=config.rooms.language)
        if not residual.is_empty():
            log.warning("apply_not_converged", actions=len(residual.actions), summary=json.dumps(residual.summary()))
    log.info("sync_applied", done=report.done, failed=len(report.failed), created=report.created)
    return SyncResult(plan, verdict, size, report, observed=stats, residual=residual)
