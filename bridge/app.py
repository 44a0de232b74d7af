"""The running bridge: wires store, homeserver client, bot, appservice server and dispatcher."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bridge.admin_room import AdminRoom
from bridge.appservice.dispatch import Dispatcher, EventHandler
from bridge.appservice.server import AppserviceServer
from bridge.audit import AuditLog
from bridge.config import Config
from bridge.errors import BridgeError
from bridge.logging import get_logger
from bridge.matrix.appservice_api import AppserviceAPI
from bridge.matrix.bot import Bot
from bridge.moderation import Moderator
from bridge.scheduler import Resyncer
from bridge.store import Store, open_store

log = get_logger(component="app")


async def log_event(event: dict[str, Any]) -> None:
    """Default handler: record what arrived (metadata only, never content)."""
    get_logger(room_id=event.get("room_id")).debug(
        "event_handled", event_type=event.get("type"), sender=event.get("sender"))


@dataclass
class Bridge:
    config: Config
    store: Store
    api: AppserviceAPI
    bot: Bot
    server: AppserviceServer
    dispatcher: Dispatcher
    runner: web.AppRunner | None = None
    handlers: list[EventHandler] = field(default_factory=list)
    resyncer: Resyncer | None = None
    sweeper: Resyncer | None = None
    policy_watch: Resyncer | None = None
    admin_room: AdminRoom | None = None
    last_sync: str = "aucune synchronisation depuis le démarrage"
    moderator: Moderator | None = None
    entitled: dict[str, frozenset[str]] = field(default_factory=dict)  # room id -> people, from the last sync
    actors: dict[str, str] = field(default_factory=dict)  # room id -> the keyless user, where it runs the room

    @classmethod
    async def create(cls, config: Config, *, store: Store | None = None) -> Bridge:
        store = store or await open_store(config.database_url)
        api = AppserviceAPI(base_url=config.homeserver.url, as_token=config.appservice.as_token)
        bot = Bot(homeserver_url=config.homeserver.url, user_id=config.bot_user_id,
                  store_dir=str(config.bot.store_dir), store_key=config.bot.store_key,
                  display_name=config.bot.display_name, api=api, as_token=config.appservice.as_token,
                  store=store)
        handlers: list[EventHandler] = [log_event]
        dispatcher = Dispatcher(store, handlers)
        bot_user = config.bot_user_id

        async def user_query(user_id: str) -> bool:
            return user_id == bot_user

        server = AppserviceServer(hs_token=config.appservice.hs_token, store=store,
                                  on_new_events=dispatcher.notify, user_query=user_query)
        bridge = cls(config, store, api, bot, server, dispatcher, handlers=handlers)
        handlers.append(bridge.remove_outsiders)
        return bridge

    async def remove_outsiders(self, event: dict[str, Any]) -> None:
        """Undo at once an invite or join of someone not entitled (not at the next sync)."""
        from bridge.policy.outsiders import outsider

        user = outsider(event, self.entitled, bridge_users=(self.config.bot_user_id, self.config.keyless_user_id))
        if user is None:
            return
        room_id = str(event["room_id"])
        reason = {"fr": "n'est pas autorisé dans ce salon selon l'annuaire",
                  "en": "is not entitled to this room according to the directory"}[self.config.rooms.language]
        # A refusal raises: the dispatcher records it and retries.
        if not await self.api.kick(room_id, user, as_user=self.actors.get(room_id, self.config.bot_user_id),
                                   reason=reason):
            return  # already gone (left, or the invite was withdrawn)
        get_logger(room_id=room_id).info("outsider_removed", user_id=user, by=event.get("sender"))
        await AuditLog(self.store, key=self.config.audit_key).append(
            actor="ent-bridge", action="outsider_removed", room=room_id, subject=user, reason=reason,
            detail={"invited_by": event.get("sender")})
        if self.moderator is not None:
            try:
                await self.moderator.outsider_removed(room_id, user, reason=reason)
            except (TimeoutError, BridgeError) as exc:  # the removal stands; only the explanation is missing
                log.warning("outsider_notice_failed", room_id=room_id, error=str(exc))

    async def start(self, *, with_bot: bool = True) -> None:
        # Listen first: Synapse may already be resending transactions from before a restart.
        self.runner = await self.server.start(host=self.config.appservice.bind_address,
                                              port=self.config.appservice.port)
        self.dispatcher.start()
        await self.ping_homeserver()
        if with_bot:
            self.moderator = Moderator(policies_dir=self.config.policies_dir, store=self.store, api=self.api,
                                       bot=self.bot, audit=AuditLog(self.store, key=self.config.audit_key),
                                       language=self.config.rooms.language, keyless=self.config.keyless_user_id)
            await self.moderator.start()
            self.bot.message_hooks.append(self.moderator.on_message)
            self.handlers.append(self.moderator.on_event)
            # Hot reload when a policy file changes (SIGHUP does the same, see run_forever).
            self.policy_watch = Resyncer(self.reload_policies, sources=[str(self.config.policies_dir)],
                                         interval=24 * 3600, watch=True, run_at_start=False)
            self.policy_watch.start()
            await self.bot.start()
            if self.config.admin_room:
                self.admin_room = AdminRoom(bot=self.bot, room_id=self.config.admin_room,
                                            admins=frozenset(self.config.admins), commands={
                                                "status": self.status, "plan": self.plan_summary,
                                                "sync": self.sync_now, "policy reload": self.reload_answer})
                await self.admin_room.join()
                self.bot.message_hooks.append(self.admin_room.on_message)
                if self.moderator is not None:
                    self.moderator.report = self.admin_room.notify
        if self.config.directory_sources:
            self.resyncer = Resyncer(self.resync, sources=list(self.config.directory_sources),
                                     interval=self.config.resync_minutes * 60, watch=self.config.watch_sources)
            self.resyncer.start()
            self.sweeper = Resyncer(self.sweep, sources=[], interval=self.config.sweep_hours * 3600, watch=False)
            self.sweeper.start()
        log.info("bridge_started", bot=self.config.bot_user_id)

    async def sweep(self) -> None:
        """Retention sweep of every managed room whose template sets a lifetime."""
        from bridge.retention_sweep import sweep_managed

        await sweep_managed(self.config, store=self.store, api=self.api)
        # The audit log's own retention, on the same schedule.
        cutoff = int(time.time() * 1000) - self.config.audit_retention_days * 86_400_000
        await AuditLog(self.store, key=self.config.audit_key).prune(older_than_ms=cutoff)

    async def reload_policies(self) -> str | None:
        """Reload templates and moderation; a broken file leaves the previous policies in force."""
        if self.moderator is None:
            return None
        error = self.moderator.reload()
        if error:
            log.error("policy_reload_failed_previous_kept", error=error)
            await self.notify_admins(f"Politique refusée, la précédente reste en vigueur : {error}")
        return error

    async def notify_admins(self, text: str) -> None:
        if self.admin_room is not None:
            await self.admin_room.notify(text)

    async def status(self) -> str:
        rooms = await self.store.all_rooms()
        dead = await self.store.dead_letters()
        pending = await self.store.pending_events(limit=1000)
        return (f"{sum(1 for r in rooms if not r.archived)} salons gérés ({sum(1 for r in rooms if r.archived)} "
                f"archivés), {len(pending)} évènements en attente, {len(dead)} en échec. "
                f"Dernière synchronisation : {self.last_sync}.")

    async def plan_summary(self) -> str:
        from bridge.admin_room import format_summary
        from bridge.reconcile.sync import run_sync

        result = await run_sync(self.config, list(self.config.directory_sources), store=self.store,
                                api=self.api, apply=False)
        guard = "" if result.verdict.ok else " — REFUSÉ par les garde-fous : " + "; ".join(result.verdict.reasons)
        return f"Plan : {format_summary(result.plan.summary())}{guard}"

    async def sync_now(self) -> str:
        await self.resync()
        return f"Synchronisation : {self.last_sync}"

    async def reload_answer(self) -> str:
        error = await self.reload_policies()
        return "Politiques rechargées." if error is None else "Rechargement refusé (voir ci-dessus)."

    async def ping_homeserver(self) -> None:
        """Ask the homeserver to ping us (MSC2659). Besides checking the registration both ways,
        a successful ping makes Synapse retry at once the transactions it held back while the
        bridge was down, instead of after its backoff (up to about 8 minutes)."""
        try:
            await self.api.ping(self.config.appservice.id, f"startup-{int(time.time())}")
            log.info("homeserver_ping_ok")
        except BridgeError as exc:
            log.warning("homeserver_ping_failed", error=str(exc))

    async def resync(self) -> None:
        """One directory sync, applied when the guards allow it; a refusal is logged as an error."""
        from bridge.reconcile.sync import run_sync

        result = await run_sync(self.config, list(self.config.directory_sources), store=self.store,
                                api=self.api, apply=True)
        if self.moderator is not None:
            await self.moderator.refresh_rooms()
        ids = {r.room_key: r.room_id for r in await self.store.all_rooms() if not r.archived}
        self.entitled = {ids[k]: frozenset(r.members) for k, r in result.plan.desired.items() if k in ids}
        self.actors = {ids[k]: r.owner for k, r in result.plan.desired.items() if k in ids and r.owner}
        from bridge.admin_room import format_summary

        if not result.verdict.ok:
            log.error("resync_refused_by_guard", reasons=list(result.verdict.reasons))
            self.last_sync = "refusée par les garde-fous"
            await self.notify_admins("Synchronisation REFUSÉE par les garde-fous : " + "; ".join(result.verdict.reasons)
                                     + ". Vérifiez l'export de l'annuaire, ou appliquez avec "
                                     "`ent-bridge sync --apply --allow-mass-removal`.")
            return
        report = result.report
        failed = len(report.failed) if report else 0
        self.last_sync = f"{format_summary(result.plan.summary())}" + (f", {failed} échecs" if failed else "")
        if result.residual is not None and not result.residual.is_empty():
            # The apply's own verification found the homeserver still different: say so.
            left = format_summary(result.residual.summary())
            await self.notify_admins(f"Après application, il reste à faire : {left}. "
                                     "La prochaine synchronisation réessaiera.")

    async def stop(self) -> None:
        for runner in (self.resyncer, self.sweeper, self.policy_watch):
            if runner is not None:
                await runner.stop()
        if self.moderator is not None:
            await self.moderator.stop()
        await self.bot.stop()
        await self.dispatcher.stop()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        await self.api.close()
        await self.store.close()
        log.info("bridge_stopped")

    async def create_encrypted_room(self, *, name: str, invite: list[str], topic: str | None = None) -> str:
        """An invite-only, end-to-end encrypted room owned by the bot."""
        body: dict[str, Any] = {
            "name": name,
            "preset": "private_chat",
            "invite": invite,
            "initial_state": [
                {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}},
                {"type": "m.room.guest_access", "state_key": "", "content": {"guest_access": "forbidden"}},
                {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "joined"}},
            ],
        }
        if topic:
            body["topic"] = topic
        room_id = await self.api.create_room(as_user=self.config.bot_user_id, body=body)
        get_logger(room_id=room_id).info("room_created", encrypted=True, invited=len(invite))
        return room_id


async def run_forever(config: Config) -> None:
    bridge = await Bridge.create(config)
    await bridge.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(bridge.reload_policies()))
    try:
        await stop.wait()
    finally:
        await bridge.stop()
