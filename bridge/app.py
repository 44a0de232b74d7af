"""The running bridge, and its composition root: every part is made and wired once, in `create`."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from bridge.absences import Absences
from bridge.access.refusals import Refusal, audit_entry
from bridge.access.snapshot import AccessSnapshot
from bridge.admin_room import AdminRoom
from bridge.announcements import Announcements
from bridge.appservice.dispatch import Dispatcher, EventHandler
from bridge.appservice.server import AppserviceServer
from bridge.audit import for_config as audit_for_config
from bridge.clock import SYSTEM, Clock
from bridge.config import Config
from bridge.errors import BridgeError
from bridge.heap import settle
from bridge.help_desk import HelpDesk
from bridge.lease import ACTIVE, WriterLease, holder_name
from bridge.logging import get_logger
from bridge.matrix.appservice_api import AppserviceAPI
from bridge.matrix.bot import Bot
from bridge.matrix.received import ReceivedMessage
from bridge.matrix.transport import Transport
from bridge.metrics import Metrics
from bridge.moderation import Moderator
from bridge.operations import Operations
from bridge.outsider_guard import OutsiderGuard
from bridge.pause import SchoolPause
from bridge.policy.holder import PolicyHolder
from bridge.scheduler import Resyncer
from bridge.store import Store, open_store
from bridge.tasks import cancel_and_wait
from bridge.undecryptable import UndecryptableWatch

log = get_logger(component="app")


async def log_event(event: dict[str, Any]) -> None:
    """First handler: record what arrived (metadata only, never content)."""
    get_logger(room_id=event.get("room_id")).debug(
        "event_handled", event_type=event.get("type"), sender=event.get("sender"))


@dataclass
class Readiness:
    """What /_matrix/mau/ready says: the store answers, the homeserver answered the start-up
    ping, the bot's device is up (for a bridge with its bot)."""

    store: Store
    bot: Bot | None
    pinged: bool = False

    async def report(self) -> dict[str, Any]:
        problems = []
        try:
            await self.store.inbox_stats()
        except Exception as exc:  # noqa: BLE001 - the answer is the report
            problems.append(f"store unreachable: {type(exc).__name__}")
        if not self.pinged:
            problems.append("the homeserver has not answered the appservice ping")
        if self.bot is not None and self.bot.client is None:
            problems.append("the bot's device is not up")
        return {"problems": problems} if problems else {}


@dataclass
class Bridge:
    """The parts of a running bridge; `start` and `stop` bring them up and down in order."""

    config: Config
    store: Store
    api: AppserviceAPI
    bot: Bot
    server: AppserviceServer
    dispatcher: Dispatcher
    outsiders: OutsiderGuard
    ops: Operations
    moderator: Moderator | None  # None: a bridge without its encrypted bot (tests, maintenance)
    admin_room: AdminRoom | None
    resyncer: Resyncer | None  # None without directory sources
    sweeper: Resyncer | None
    policy_watch: Resyncer | None
    metrics: Metrics
    readiness: Readiness
    announcements: Announcements | None = None
    runner: web.AppRunner | None = None
    _lag: asyncio.Task[None] | None = None
    _reminders: asyncio.Task[None] | None = None

    @classmethod
    async def create(cls, config: Config, *, store: Store | None = None, with_bot: bool = True,
                     clock: Clock = SYSTEM, transport: Transport | None = None,
                     isolate_syncs: bool | None = None) -> Bridge:
        """transport: how the homeserver is reached (aiohttp by default; the fake in unit tests).
        isolate_syncs: syncs in a child process (by default, unless the transport is given: a child
        can't reach an in-memory homeserver)."""
        store = store or await open_store(config.database_url)
        metrics = Metrics()
        api = AppserviceAPI(base_url=config.homeserver.url, as_token=config.appservice.as_token, clock=clock,
                            transport=transport, metrics=metrics)
        audit = audit_for_config(config, store)

        async def on_decrypted(msg: ReceivedMessage) -> None:
            for hook in hooks:  # bound below, once every part exists
                await hook(msg)

        bot = Bot(homeserver_url=config.homeserver.url, user_id=config.bot_user_id,
                  store_dir=str(config.bot.store_dir), store_key=config.bot.store_key,
                  display_name=config.bot.display_name, api=api, as_token=config.appservice.as_token,
                  store=store, message_hooks=[on_decrypted],
                  avatar=config.bot.avatar.read_bytes() if config.bot.avatar else None, clock=clock)
        def commands() -> Mapping[str, Callable[[], Awaitable[str]]]:
            return ops.commands()  # made below: the operations report through the admin room

        admin_room = AdminRoom(bot=bot, room_id=config.admin_room, admins=frozenset(config.admins),
                               commands=commands) if with_bot and config.admin_room else None

        def rooms_of(user: str) -> list[str]:
            return [room for room, people in outsiders.entitled.items() if user in people]  # bound below

        async def notify(text: str) -> None:
            if admin_room is not None:
                await admin_room.notify(text)

        # One value of the policies in force, for moderation, syncs and sweeps alike.
        policies = PolicyHolder(config.policies_dir, pins=config.bot.store_dir.parent / "policies-in-force")
        if (error := policies.reload()) is not None:
            raise BridgeError(f"policies: {error}")
        moderator = Moderator(policies_dir=config.policies_dir, store=store, api=api, bot=bot, audit=audit,
                              language=config.rooms.language, keyless=config.keyless_user_id, clock=clock,
                              report=notify if admin_room is not None else None, holder=policies,
                              metrics=metrics, rooms_of=rooms_of) if with_bot else None
        outsiders = OutsiderGuard(api=api, audit=audit, bot=config.bot_user_id, keyless=config.keyless_user_id,
                                  language=config.rooms.language,
                                  explain=moderator.outsider_removed if moderator is not None else None)
        isolate = transport is None if isolate_syncs is None else isolate_syncs
        ops = Operations(config=config, store=store, api=api, outsiders=outsiders, moderator=moderator,
                         notify=notify, clock=clock, policies=policies, isolate=isolate, metrics=metrics)
        snapshot = AccessSnapshot(config.access_snapshot) if config.access_snapshot else None
        if moderator is not None and snapshot is not None:
            moderator.given = snapshot.own_names
        absences = Absences(moderator=moderator, store=store, snapshot=snapshot, rooms_of=rooms_of, clock=clock,
                            language=config.rooms.language) if moderator else None
        help_desk = HelpDesk(bot=bot, snapshot=snapshot, admins=frozenset(config.admins),
                             language=config.rooms.language, is_managed=moderator.is_managed,
                             admin_room=config.admin_room, commands=absences.command if absences else None,
                             ) if moderator else None
        announcements = Announcements(moderator=moderator, bot=bot, store=store, audit=audit, snapshot=snapshot,
                                      clock=clock, language=config.rooms.language) if moderator else None
        if announcements is not None:
            bot.reaction_hooks.append(announcements.on_reaction)
        if moderator is not None:
            bot.gap_unread = moderator.gap_unread
        pause = SchoolPause(moderator=moderator, api=api, store=store, audit=audit, admins=frozenset(config.admins),
                            clock=clock, language=config.rooms.language) if moderator else None
        hooks = tuple(h for h in (moderator.on_decrypted if moderator else None,
                                  pause.on_message if pause else None,
                                  absences.on_message if absences else None,
                                  announcements.on_message if announcements else None,
                                  admin_room.on_message if admin_room else None,
                                  help_desk.on_message if help_desk else None) if h is not None)
        handlers: list[EventHandler] = [log_event, outsiders.on_event]
        if moderator is not None:
            handlers.append(moderator.on_event)
            if with_bot:  # an encrypted message the bot did not read waits for it, then is judged
                handlers.append(UndecryptableWatch(moderator, clock=clock).on_event)
        dispatcher = Dispatcher(store, handlers, clock=clock)
        bot_user = config.bot_user_id

        async def user_query(user_id: str) -> bool:
            return user_id == bot_user

        health = Readiness(store=store, bot=bot if with_bot else None)
        async def on_refusals(refusals: list[Refusal]) -> None:  # the homeserver's module refused these
            for refusal in refusals:
                audit.record(**audit_entry(refusal, audit.pseudonym))
            await audit.flush()

        server = AppserviceServer(hs_token=config.appservice.hs_token, store=store,
                                  on_new_events=dispatcher.notify, user_query=user_query,
                                  dispatcher_state=dispatcher.state, metrics=metrics, ready=health.report,
                                  on_refusals=on_refusals)
        sources = list(config.directory_sources)
        return cls(
            config=config, store=store, api=api, bot=bot, server=server, dispatcher=dispatcher, metrics=metrics,
            readiness=health, announcements=announcements,
            outsiders=outsiders, ops=ops, moderator=moderator, admin_room=admin_room,
            resyncer=Resyncer(ops.resync, sources=sources, interval=config.resync_minutes * 60,
                              watch=config.watch_sources) if sources else None,
            sweeper=Resyncer(ops.sweep, sources=[], interval=config.sweep_hours * 3600, watch=False)
            if sources else None,
            # Hot reload when a policy file changes (SIGHUP does the same, see run_forever).
            policy_watch=Resyncer(ops.reload_policies, sources=[str(config.policies_dir)], interval=24 * 3600,
                                  watch=True, run_at_start=False) if moderator is not None else None)

    async def start(self) -> None:
        """Bring every part up; if one fails, what was already up is brought down again (the port
        released, the store closed) before the error goes on."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        await self.api.check_reachable(self.config.homeserver.url)
        if not self.config.directory_sources:
            log.warning("no_directory_sources", hint="directory.sources is empty: this bridge will not sync rooms "
                                                     "(moderation, the bot and the rest run)")
        await self.ops.restore()  # the outsider rule holds from the first event, whatever the export
        # Listen first: Synapse may already be resending transactions from before a restart.
        self.runner = await self.server.start(host=self.config.appservice.bind_address,
                                              port=self.config.appservice.port)
        self.dispatcher.start()
        self._lag = asyncio.ensure_future(self.metrics.watch_loop())
        await self.ping_homeserver()
        if self.moderator is not None:
            await self.moderator.start()
            await self.bot.start()
        if self.admin_room is not None:
            await self.admin_room.join()
        for scheduler in (self.policy_watch, self.resyncer, self.sweeper):
            if scheduler is not None:
                scheduler.start()
        if self.announcements is not None:
            self._reminders = asyncio.ensure_future(self._every(60.0, self.announcements.tick))
        log.info("bridge_started", bot=self.config.bot_user_id)

    async def _every(self, seconds: float, work: Callable[[], Awaitable[None]]) -> None:
        """Run `work` every so often until cancelled; a failure is logged, and tried again next time."""
        while True:
            await asyncio.sleep(seconds)
            try:
                await work()
            except Exception as exc:  # noqa: BLE001 - a periodic task must not die of one failure
                log.warning("periodic_failed", work=getattr(work, "__qualname__", "?"), error=type(exc).__name__)

    async def ping_homeserver(self) -> None:
        """Ask the homeserver to ping us (MSC2659). Besides checking the registration both ways,
        a successful ping makes Synapse retry at once the transactions it held back while the
        bridge was down, instead of after its backoff (up to about 8 minutes)."""
        try:
            await self.api.ping(self.config.appservice.id, f"startup-{self.ops.clock.now_ms() // 1000}")
            self.readiness.pinged = True
            log.info("homeserver_ping_ok")
        except BridgeError as exc:
            log.warning("homeserver_ping_failed", error=str(exc))

    async def stop(self) -> None:
        for task in (self._lag, self._reminders):
            await cancel_and_wait(task)
        self._lag = self._reminders = None
        for scheduler in (self.resyncer, self.sweeper, self.policy_watch):
            if scheduler is not None:
                await scheduler.stop()
        await self.bot.stop()  # first: the messages it still handles need the moderator
        if self.moderator is not None:
            await self.moderator.stop()
        await self.dispatcher.stop()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        await self.api.close()
        await self.store.close()
        log.info("bridge_stopped")


ACTIVE_TTL_S = 20.0  # a standby takes over at most this long after the active one died elsewhere


async def run_forever(config: Config) -> int:
    """Serve as the active bridge; while another `run` is active on the same store, wait as its
    standby. The active lease is held on a connection of its own and released only once the
    bridge has stopped (port closed); losing it (a frozen process whose lease expired) stops
    this one, exit code 1, so that two never serve at once."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    lease_store = await open_store(config.database_url)
    lease = WriterLease(lease_store, holder=holder_name("run"), name=ACTIVE, ttl_s=ACTIVE_TTL_S, poll_s=0.5)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        waiting = asyncio.ensure_future(lease.acquire())
        await asyncio.wait([waiting, stopping], return_when=asyncio.FIRST_COMPLETED)
        if not waiting.done():  # stopped while standing by
            await cancel_and_wait(waiting)
            return 0
        waiting.result()
        log.info("bridge_active", holder=lease.holder)
        bridge = await Bridge.create(config)
        await bridge.start()
        settle()  # the process's start-up is over: what it built is never walked by a full collection again
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(bridge.ops.reload_policies()))
        lost = asyncio.ensure_future(lease.lost.wait())
        try:
            await asyncio.wait([stopping, lost], return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait(lost)
            await bridge.stop()
        if lease.lost.is_set():
            log.error("bridge_stopped_lease_lost")
            return 1
        return 0
    finally:
        await cancel_and_wait(stopping)
        await lease.release()
        await lease_store.close()
