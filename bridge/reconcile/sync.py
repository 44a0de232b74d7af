"""One sync (imperative shell): `plan_sync` reads and plans (a value), `apply_sync` applies it.

directory -> desired -> observe -> plan -> guards  (plan_sync: writes nothing but the observation
cache when asked to) then apply -> verify (apply_sync). `run_sync` is the two in a row.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from bridge.access.given import given_names
from bridge.access.links import Relations, families_by_room, managed_rooms, relations
from bridge.access.shown import publish
from bridge.access.snapshot import write_snapshot
from bridge.audit import for_config as audit_for_config
from bridge.clock import SYSTEM, Clock
from bridge.config import Config
from bridge.directory.sources import load
from bridge.lease import WriterLease, holder_name
from bridge.logging import get_logger
from bridge.matrix.port import Homeserver
from bridge.outsider_guard import OUTSIDERS_KEY, snapshot_of
from bridge.policy.access import load_access
from bridge.policy.folder import check_folder
from bridge.reconcile import guards, planner
from bridge.reconcile.actions import ErasePerson, Plan, ProvisionAccount
from bridge.reconcile.executor import AccountAdmin, ApplyReport, RoomExecutor
from bridge.reconcile.inputs import AccountLookup, desired_state, gc_paused, match_emails, missing_accounts
from bridge.reconcile.observed import ObservedState
from bridge.reconcile.observer import ObserveStats, RoomObserver
from bridge.rooms.desired import DesiredState
from bridge.rooms.leavers import due_for_erasure, leaver_changes
from bridge.rooms.pauses import PAUSES_KEY, paused_levels, with_pauses
from bridge.rooms.pauses import decode as decode_pauses
from bridge.store.base import Store

DIRECTORY_SIZE_KEY = "directory_size"
log = get_logger(component="sync")


class Accounts(AccountLookup, AccountAdmin, Protocol):
    """The homeserver's account admin: lookups while planning, changes while applying."""


@dataclass(frozen=True)
class SyncPorts:
    """What a sync talks to, made once by the caller (the composition root)."""

    store: Store
    api: Homeserver
    accounts: Accounts | None = None  # with homeserver.admin_token
    clock: Clock = SYSTEM
    stop: asyncio.Event | None = None  # set: the apply starts nothing more (Ctrl-C, SIGTERM)


@dataclass(frozen=True)
class SyncPlan:
    """Everything apply needs, computed by plan_sync: the plan and what to record once applied."""

    plan: Plan
    verdict: guards.Verdict
    desired: DesiredState
    directory_size: int
    identities: dict[str, str]  # person id -> Matrix id, as planned
    known: dict[str, str]  # person id -> Matrix id, as the store held it
    gone: dict[str, int]  # people newly absent from the directory -> since
    back: list[str]  # people present again
    observed: ObserveStats
    now_ms: int
    relations: Relations  # who may reach whom, for the homeserver module
    families: dict[str, tuple[frozenset[str], ...]]  # room key -> its pupils' families (announcements)
    shown: dict[str, dict[str, Any]]  # template -> what the module holds its rooms' names and topics to
    given: dict[str, frozenset[str]]  # Matrix id -> digests of the names the directory gives them


@dataclass(frozen=True)
class SyncResult:
    plan: Plan
    verdict: guards.Verdict
    directory_size: int
    report: ApplyReport | None = None
    observed: ObserveStats | None = None  # how many rooms were read from the homeserver
    residual: Plan | None = None  # what a plan made right after the apply still finds to do
    passes: int = 1  # 2 when the verification found work the first pass could not do in order


def _observer(config: Config, ports: SyncPorts) -> RoomObserver:
    return RoomObserver(api=ports.api, store=ports.store, bot=config.bot_user_id, keyless=config.keyless_user_id,
                        server_name=config.homeserver.server_name, sem=asyncio.Semaphore(config.rooms.concurrency),
                        full_every_ms=int(config.rooms.full_observe_hours * 3_600_000), clock=ports.clock)


async def _observe(config: Config, ports: SyncPorts, desired: DesiredState, *, now_ms: int, full: bool,
                   save: bool) -> tuple[ObservedState, ObserveStats]:
    observer = _observer(config, ports)
    observed = await observer.observe(desired.rooms, now_ms=now_ms, full=full, save=save,
                                      grace_ms=config.rooms.archive_grace_days * 86_400_000)
    return observed, observer.stats


def _plan(config: Config, desired: DesiredState, observed: ObservedState, *,
          accounts: Sequence[ProvisionAccount] = (), erase: Sequence[ErasePerson] = ()) -> Plan:
    with gc_paused():
        return planner.plan(desired, observed, bot=config.bot_user_id, keyless=config.keyless_user_id,
                            language=config.rooms.language, grace_days=config.rooms.archive_grace_days,
                            accounts=accounts, erase=erase)


async def plan_sync(config: Config, sources: list[str], ports: SyncPorts, *, save_observation: bool,
                    allow_mass_removal: bool = False, offline: bool = False,
                    full_observe: bool = False) -> SyncPlan:
    """Read the directory and the homeserver, and plan. offline: as if no room existed and no
    account admin were reachable; save_observation: an apply follows (the bridge's users are
    registered, what was read is kept in the cache), else nothing at all is written."""
    store = ports.store
    now = ports.clock.now()
    now_ms = int(now.timestamp() * 1000)
    accounts = None if offline else ports.accounts
    # Reading a département's export and planning for it take seconds of CPU: on a worker thread,
    # so the transaction endpoint and moderation keep answering meanwhile.
    directory, _ = await asyncio.to_thread(load, sources, academie=config.academie, school_names=config.school_names)
    known = await store.identities()
    by_email, notes = await match_emails(config, directory, known, accounts)
    desired, identities = await asyncio.to_thread(desired_state, config, directory, known, now=now,
                                                  by_email=by_email)
    reach = await asyncio.to_thread(relations, directory, identities, load_access(config.policies_dir),
                                    secret=config.rooms.key_secret)
    families = await asyncio.to_thread(families_by_room, directory, identities, desired.rooms)
    shown = publish(*await asyncio.to_thread(check_folder, config.policies_dir))
    given = await asyncio.to_thread(given_names, directory, identities)
    desired = await _keep_pauses(desired, store)
    provision, more = await missing_accounts(config, directory, identities, known, accounts)
    if notes + more:
        desired = dataclasses.replace(desired, warnings=desired.warnings + tuple(notes + more))
    if offline:
        observed, stats = ObservedState(), ObserveStats()
    else:
        if save_observation:  # an apply follows: its users exist before the observation takes their tokens
            await _register_bridge_users(config, desired, ports)
        observed, stats = await _observe(config, ports, desired, now_ms=now_ms, full=full_observe,
                                         save=save_observation)
    present = set(directory.staff) | set(directory.guardians)
    leavers = await store.leavers()
    provisioned = set(await store.provisioned())
    erase = [ErasePerson(pid, known[pid], "left the directory more than the grace period ago",
                         known[pid] in provisioned)
             for pid in due_for_erasure(leavers, now_ms=now_ms, grace_ms=config.identity.erase_after_days * 86_400_000)
             if pid in known and pid not in present]
    plan = await asyncio.to_thread(_plan, config, desired, observed, accounts=provision, erase=erase)
    size = len(directory.pupils) + len(directory.guardians) + len(directory.staff)
    previous = await store.get_value(DIRECTORY_SIZE_KEY)
    verdict = guards.check(plan, observed, limits=_limits(config), directory_size=size,
                           previous_directory_size=int(previous) if previous else None,
                           allow_mass_removal=allow_mass_removal)
    log.info("sync_planned", actions=len(plan.actions), summary=json.dumps(plan.summary()), guard_ok=verdict.ok)
    gone, back = leaver_changes(known, present, leavers, now_ms=now_ms)
    return SyncPlan(plan, verdict, desired, size, identities, known, gone, back, stats, now_ms, reach, families,
                    shown, given)


async def _keep_pauses(desired: DesiredState, store: Store) -> DesiredState:
    """A paused school's rooms stay paused: the sync wants them as the pause made them."""
    pauses = decode_pauses(await store.get_value(PAUSES_KEY))
    if not pauses:
        return desired
    keys = {r.room_id: r.room_key for r in await store.all_rooms()}
    return with_pauses(desired, {keys[room]: level for room, level in paused_levels(pauses).items() if room in keys})


async def _register_bridge_users(config: Config, desired: DesiredState, ports: SyncPorts) -> None:
    """The bot owns the rooms; a standalone `sync --apply` may run before `run` ever did. Done
    before the observation, for the users it holds no /sync token of (a user with one exists):
    each then gets a token from before the apply, so the apply's verification reads only the
    changes since then, a first run included."""
    users = {config.bot_user_id: config.bot.localpart}
    if any(d.owner for d in desired.rooms.values()):
        users[config.keyless_user_id] = config.bot.keyless_localpart
    known = await _observer(config, ports).users_with_tokens()
    for user_id, localpart in users.items():
        if user_id not in known:
            await ports.api.register_user(localpart)


def _limits(config: Config) -> guards.Limits:
    return guards.Limits(config.rooms.max_removal_share, config.rooms.max_removals, config.rooms.max_directory_shrink)


async def _record_directory(sp: SyncPlan, store: Store) -> None:
    await store.set_value(DIRECTORY_SIZE_KEY, str(sp.directory_size))
    # Departures are dated only by an applied sync: a refused, truncated export dates nobody.
    await store.set_leavers(add=sp.gone, remove=sp.back)


async def _record_outsiders_rule(sp: SyncPlan, store: Store) -> None:
    # The rule the running bridge applies to invites and joins from now on (it may run this sync
    # in a child process: it reads the rule back from the store).
    await store.set_value(OUTSIDERS_KEY, snapshot_of(sp.desired.rooms, await store.all_rooms()))


async def _publish_access(config: Config, sp: SyncPlan, store: Store) -> None:
    # Before an apply (so people can join rooms as they are made: new rooms name their ref in
    # their own state) and after it (the new rooms' ids). Only an accepted plan publishes: the
    # relations of a truncated export would cut families off their teachers.
    if config.access_snapshot is None:
        return
    refs = {k: r.alias_localpart for k, r in sp.desired.rooms.items()}
    ids = {r.room_id: refs[r.room_key] for r in await store.all_rooms() if not r.archived and r.room_key in refs}
    await asyncio.to_thread(write_snapshot, config.access_snapshot, sp.relations,
                            managed_rooms(sp.desired.rooms, sp.families), ids,
                            generated_ms=sp.now_ms, shown=sp.shown, given=sp.given)
    log.info("access_published", links=len(sp.relations.links), rooms=len(refs))


async def apply_sync(config: Config, sp: SyncPlan, ports: SyncPorts) -> SyncResult:
    """Apply a plan the guards accepted, then verify: observe again and plan; the residual
    should be empty. A refused plan is audited and nothing is applied."""
    store, api = ports.store, ports.api
    audit = audit_for_config(config, store)
    plan = sp.plan
    if not sp.verdict.ok:
        await audit.append(actor="ent-bridge", action="plan_refused", reason="; ".join(sp.verdict.reasons),
                           detail={"summary": plan.summary()})
        return SyncResult(plan, sp.verdict, sp.directory_size, observed=sp.observed)
    if plan.is_empty():
        await _record_directory(sp, store)  # local only: no homeserver write
        await _record_outsiders_rule(sp, store)
        await _publish_access(config, sp, store)
        return SyncResult(plan, sp.verdict, sp.directory_size, ApplyReport(), observed=sp.observed, residual=plan)
    # The bot owns the rooms (registered again: the homeserver may have lost it since its token).
    await api.register_user(config.bot.localpart)
    if any(d.owner for d in sp.desired.rooms.values()):
        await api.register_user(config.bot.keyless_localpart)
        await api.ensure_display_name(config.keyless_user_id, config.bot.keyless_display_name)
    executor = RoomExecutor(api=api, store=store, bot=config.bot_user_id, keyless=config.keyless_user_id,
                            server_name=config.homeserver.server_name, concurrency=config.rooms.concurrency,
                            audit=audit, accounts=ports.accounts, clock=ports.clock, stop=ports.stop)
    await _publish_access(config, sp, store)
    report = await executor.apply(plan)
    # People keep the id they were given, even if a homonym shows up later.
    new = {pid: mxid for pid, mxid in sp.identities.items() if sp.known.get(pid) != mxid}
    if new:
        await store.put_identities(new)
    residual = None
    passes = 1
    if report.interrupted:
        log.warning("apply_interrupted", done=report.done, not_started=report.interrupted)
    elif not report.failed:
        await _record_directory(sp, store)
        # Verify: re-observe what the apply touched (the homeserver names those rooms) and plan
        # again. It should find nothing; and the cache is then fresh for the next sync.
        observed, _ = await _observe(config, ports, sp.desired, now_ms=sp.now_ms, full=False, save=True)
        residual = await asyncio.to_thread(_plan, config, sp.desired, observed)
        if not residual.is_empty() and guards.check(
                residual, observed, limits=_limits(config), directory_size=sp.directory_size,
                previous_directory_size=sp.directory_size).ok:
            # What the first pass could not do in order (a room adopted half-made: its state first,
            # then its invites) is planned again from what is there now, and applied once more.
            log.info("apply_second_pass", actions=len(residual.actions), summary=json.dumps(residual.summary()))
            more = await executor.apply(residual)
            passes = 2
            report.done += more.done
            report.failed.extend(more.failed)
            observed, _ = await _observe(config, ports, sp.desired, now_ms=sp.now_ms, full=False, save=True)
            residual = await asyncio.to_thread(_plan, config, sp.desired, observed)
        if not residual.is_empty():
            log.warning("apply_not_converged", actions=len(residual.actions), summary=json.dumps(residual.summary()))
    await _record_outsiders_rule(sp, store)
    await _publish_access(config, sp, store)
    log.info("sync_applied", done=report.done, failed=len(report.failed), created=report.created)
    return SyncResult(plan, sp.verdict, sp.directory_size, report, observed=sp.observed, residual=residual,
                      passes=passes)


async def run_sync(config: Config, sources: list[str], *, store: Store, api: Homeserver, apply: bool,
                   allow_mass_removal: bool = False, offline: bool = False, full_observe: bool = False,
                   clock: Clock = SYSTEM, accounts: Accounts | None = None, role: str = "sync",
                   wait_for_writer: bool = True, stop: asyncio.Event | None = None) -> SyncResult:
    """plan_sync, then apply_sync when asked to. An apply plans and applies under the writer
    lease: one process at a time, so two never create the same rooms or invite twice. Without
    `accounts`, one is made from the config's admin token for the duration of the sync."""
    # Real time, whatever `clock` says: a sync "as of" a date still holds the lease for seconds.
    lease = WriterLease(store, holder=holder_name(role), wait=wait_for_writer) if apply else contextlib.nullcontext()
    async with lease:
        return await _run_sync(config, sources, store=store, api=api, apply=apply,
                               allow_mass_removal=allow_mass_removal, offline=offline, full_observe=full_observe,
                               clock=clock, accounts=accounts, stop=stop)


async def _run_sync(config: Config, sources: list[str], *, store: Store, api: Homeserver, apply: bool,
                    allow_mass_removal: bool, offline: bool, full_observe: bool, clock: Clock,
                    accounts: Accounts | None, stop: asyncio.Event | None = None) -> SyncResult:
    own = None
    if accounts is None and not offline:
        from bridge.matrix.accounts import account_admin

        own = accounts = await account_admin(config)  # Synapse's admin API, or MAS's
    ports = SyncPorts(store, api, accounts, clock, stop)
    try:
        sp = await plan_sync(config, sources, ports, save_observation=apply, allow_mass_removal=allow_mass_removal,
                             offline=offline, full_observe=full_observe)
        if not apply:
            return SyncResult(sp.plan, sp.verdict, sp.directory_size, observed=sp.observed)
        return await apply_sync(config, sp, ports)
    finally:
        if own is not None:
            await own.close()
