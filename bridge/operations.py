"""What the running bridge does on a schedule or on an admin's command: syncs, sweeps, reloads, status."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable

from bridge import admin_room as texts
from bridge.access.shown import publish
from bridge.access.snapshot import republish_shown
from bridge.audit import for_config as audit_for_config
from bridge.clock import Clock
from bridge.config import Config
from bridge.errors import InputError
from bridge.logging import get_logger
from bridge.matrix.port import Homeserver
from bridge.metrics import Metrics
from bridge.moderation import Moderator
from bridge.outsider_guard import OUTSIDERS_KEY, OutsiderGuard
from bridge.policy.holder import PolicyHolder
from bridge.reconcile.sync import run_sync
from bridge.retention_sweep import sweep_managed
from bridge.store.base import Store
from bridge.sync_process import SyncOutcome, child_sync

log = get_logger(component="operations")
Notify = Callable[[str], Awaitable[None]]


class Operations:
    def __init__(self, *, config: Config, store: Store, api: Homeserver, outsiders: OutsiderGuard,
                 moderator: Moderator | None, notify: Notify, clock: Clock, policies: PolicyHolder,
                 isolate: bool = True, metrics: Metrics | None = None) -> None:
        """isolate: syncs run in a child process (bridge/sync_process.py); False runs them here
        (a homeserver only this process can reach: the tests' in-memory one). policies: the
        value in force, which syncs, sweeps and moderation all read."""
        self.policies = policies
        self.metrics = metrics
        self.isolate = isolate
        self.config = config
        self.store = store
        self.api = api
        self.outsiders = outsiders
        self.moderator = moderator
        self.notify = notify
        self.clock = clock
        self.last_sync = texts.NO_SYNC_YET
        self.last_outcome: SyncOutcome | None = None

    def _config(self) -> Config:
        # The pinned copy of the policies in force, not the folder admins edit: a file changed
        # since the last (validated) reload is not used until a reload accepts it.
        return dataclasses.replace(self.config, policies_dir=self.policies.current.folder)

    async def sync(self, *, apply: bool) -> SyncOutcome:
        config = self._config()
        if self.isolate:
            return await child_sync(config, apply=apply)
        return SyncOutcome.of(await run_sync(config, list(config.directory_sources), store=self.store,
                                             api=self.api, apply=apply, clock=self.clock, role="run"))

    async def resync(self) -> None:
        """One directory sync, applied when the guards allow it; a refusal is logged and reported.
        A broken export is reported (file and line) and changes nothing: the rooms, and the
        outsider rule, stay as the last good export made them."""
        started, planned_by = time.monotonic(), self.policies.current.digest
        try:
            outcome = await self.sync(apply=True)
            if self.policies.current.digest != planned_by:
                # A reload during the sync: the snapshot it wrote holds the rules it was planned by.
                await self._republish_rules()
        except InputError as exc:
            log.error("directory_export_refused", error=str(exc))
            self.last_sync = texts.export_refused(str(exc))
            await self.notify(self.last_sync)
            return
        self.last_outcome = outcome
        if self.metrics is not None:
            self.metrics.sync_seconds.observe(time.monotonic() - started)
            if outcome.refused:
                self.metrics.guard_refusals.inc()
            else:
                for kind, n in outcome.summary.items():
                    self.metrics.actions.labels(kind).inc(n)
                self.metrics.actions_failed.inc(outcome.failed)
        if self.moderator is not None:
            await self.moderator.refresh_rooms()
        await self.restore()  # the rule the sync saved (in this process or the child)
        if outcome.refused:
            log.error("resync_refused_by_guard", reasons=list(outcome.refusals))
            self.last_sync = texts.SYNC_REFUSED
            await self.notify(texts.refused(outcome.refusals))
            return
        self.last_sync = texts.sync_done(outcome.summary, outcome.failed)
        if outcome.residual:
            # The apply's own verification found the homeserver still different: say so.
            await self.notify(texts.residual(outcome.residual))

    async def restore(self) -> None:
        """At start: the outsider rule from the last applied sync, before any event is handled."""
        saved = await self.store.get_value(OUTSIDERS_KEY)
        if saved:
            self.outsiders.restore(saved)
            log.info("outsider_rule_restored", rooms=len(self.outsiders.entitled))

    async def sweep(self) -> None:
        """Retention sweep of every managed room whose template sets a lifetime, then the audit
        log's own retention."""
        report = await sweep_managed(self._config(), store=self.store, api=self.api, clock=self.clock)
        if self.metrics is not None:
            self.metrics.sweeps.inc()
            self.metrics.redactions.inc(report.redacted)
        cutoff = self.clock.now_ms() - self.config.audit_retention_days * 86_400_000
        await audit_for_config(self.config, self.store).prune(older_than_ms=cutoff)
        # Transaction ids and handled event ids: the homeserver resends for minutes, not weeks.
        await self.store.prune_transactions(before_ms=self.clock.now_ms() - 7 * 86_400_000)

    async def reload_policies(self) -> str | None:
        """Reload templates, moderation and access rules as one value; a broken file leaves the
        previous value in force."""
        error = self.policies.reload()
        if error:
            log.error("policy_reload_failed_previous_kept", error=error)
            await self.notify(texts.policy_refused(error))
            return error
        value = self.policies.current
        if self.moderator is not None:
            self.moderator.adopt(value)
        # The module holds names and topics to the rules in the snapshot: the new ones apply
        # there now too, not at the next sync (hours away, or never while a guard refuses).
        await self._republish_rules()
        return None

    async def _republish_rules(self) -> None:
        if self.config.access_snapshot is None:
            return
        value = self.policies.current
        shown = publish(value.templates, value.policies)
        if await asyncio.to_thread(republish_shown, self.config.access_snapshot, shown):
            log.info("access_rules_republished", templates=len(shown), digest=value.digest)

    # --- the admin room's commands ------------------------------------------------------------

    async def status(self) -> str:
        rooms = await self.store.all_rooms()
        stats = await self.store.inbox_stats()
        archived = sum(1 for r in rooms if r.archived)
        return texts.status(active=len(rooms) - archived, archived=archived, pending=stats.pending, dead=stats.dead,
                            last_sync=self.last_sync)

    async def plan_summary(self) -> str:
        outcome = await self.sync(apply=False)
        return texts.plan(outcome.summary, outcome.refusals)

    async def sync_now(self) -> str:
        await self.resync()
        return texts.synced(self.last_sync)

    async def reload_answer(self) -> str:
        return texts.reloaded(await self.reload_policies() is None)

    def commands(self) -> dict[str, Callable[[], Awaitable[str]]]:
        return {"status": self.status, "plan": self.plan_summary, "sync": self.sync_now,
                "policy reload": self.reload_answer}
