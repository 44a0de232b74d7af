"""The bot's end-to-end encrypted identity: a namespaced user with an MSC4190 device, driven by nio."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Protocol

from nio import (
    AsyncClientConfig,
    BadEvent,
    Event,
    InviteMemberEvent,
    MegolmEvent,
    RoomSendResponse,
    SyncResponse,
)
from nio.exceptions import LocalProtocolError

from bridge.clock import SYSTEM, Clock
from bridge.errors import BridgeError, MatrixError
from bridge.lanes import Checkpoints, Handled, HandledStore, RoomLanes
from bridge.logging import get_logger
from bridge.matrix import identity, nio_schemas
from bridge.matrix.appservice_api import AppserviceAPI
from bridge.matrix.avatar import default_avatar
from bridge.matrix.cross_signing import CrossSigningKeys
from bridge.matrix.late_keys import read_late, received_of
from bridge.matrix.nio_client import AppserviceNioClient, GapUnread
from bridge.matrix.received import (
    MESSAGE_TYPES,
    MessageHook,
    ReactionHook,
    ReceivedMessage,
    ReceivedReaction,
    run_hooks,
)
from bridge.private_files import private_dir, private_files_in
from bridge.tasks import cancel_and_wait

nio_schemas.install()
log = get_logger(component="bot")

ROOM_EVENTS = (Event, BadEvent)  # what nio parsed into a class, and what it found of the wrong shape
RECENT_DECRYPTED = 50_000  # ids of decrypted events kept in memory (the store keeps those handled)
STOP_WAIT_S = 10.0  # at stop, how long received messages still being handled are waited for
# A quiet sync returns after this: what waits on the bot's syncs (an unread message's key) waits
# up to that long per sync. Read at each start of the loop.
SYNC_TIMEOUT_MS = 10_000


class BotStore(HandledStore, identity.Values, Protocol):
    """Where the bot keeps its identity and the ids of the events it handled (the store)."""


class Bot:
    def __init__(self, *, homeserver_url: str, user_id: str, store_dir: str, store_key: str,
                 display_name: str, api: AppserviceAPI, as_token: str, store: BotStore,
                 message_hooks: list[MessageHook] | None = None, avatar: bytes | None = None,
                 clock: Clock = SYSTEM) -> None:
        """avatar: the image (PNG or JPEG) clients show for the bot; a drawn one by default."""
        self.avatar = avatar
        self.homeserver_url = homeserver_url
        self.user_id = user_id
        self.store_dir = store_dir
        self._store_key = store_key
        self.display_name = display_name
        self.api = api
        self._as_token = as_token
        self.store = store
        self.client: AppserviceNioClient | None = None
        self.message_hooks: list[MessageHook] = list(message_hooks or [])
        self.gap_unread: GapUnread | None = None  # told of a room whose missed messages could not be read back
        self.reaction_hooks: list[ReactionHook] = []
        self._sync_task: asyncio.Task[None] | None = None
        self._synced = asyncio.Condition()
        self.lanes = RoomLanes()
        self.checkpoints: Checkpoints | None = None
        self.handled: Handled | None = None
        self.clock = clock
        self._replaying = False  # the first sync after start: what it brings may have been handled
        # How far the bot has read, for moderation waiting on a key that may come late: the syncs
        # completed, and the events decrypted lately (a bounded, oldest-first record).
        self.syncs = 0
        self._decrypted: dict[str, None] = {}
        self._awaited: dict[str, asyncio.Future[None]] = {}  # event id -> resolved when it is decrypted

    @property
    def device_id(self) -> str:
        assert self.client is not None and self.client.device_id
        return str(self.client.device_id)

    async def start(self, *, sync: bool = True, reset_identity: bool = False) -> None:
        """Register the user and device if needed, open the crypto store, upload keys, sync."""
        private_dir(Path(self.store_dir))  # the crypto store: the bot's keys
        localpart = self.user_id.split(":", 1)[0][1:]
        await self.api.register_user(localpart)
        device_id = await identity.device_id(self.store, self.store_dir, self.user_id)
        await self.api.ensure_device(self.user_id, device_id, display_name=self.display_name)
        # Clients show this name (not "ent-bridge_bot") and avatar in rooms and in the user directory.
        await self.api.ensure_display_name(self.user_id, self.display_name)
        await self._ensure_avatar()
        # The sync token is kept by `Checkpoints`, once the messages before it were handled (nio
        # would save it as the sync arrives); it is read back here from nio's store, where it was.
        config = AsyncClientConfig(encryption_enabled=True, store_sync_tokens=False,
                                   pickle_key=self._store_key, request_timeout=60)
        client = AppserviceNioClient(self.homeserver_url, self.user_id, device_id=device_id,
                                     store_path=self.store_dir, config=config)
        client.restore_login(self.user_id, device_id, self._as_token)
        client.gap_unread = self.gap_unread
        private_files_in(Path(self.store_dir), "*.db")  # nio makes its store with the process's umask
        if client.olm is None:
            raise BridgeError("the bot's crypto store did not open (is matrix-nio[e2e] installed?)")
        if client.store is not None:  # opened with the olm machine
            client.loaded_sync_token = client.store.load_sync_token() or ""
            self.checkpoints = Checkpoints(self.lanes, client.store.save_sync_token)
            self.checkpoints.start()
            self.handled = Handled(self.store, self.clock)
            self.handled.start()
        self.client = client
        if client.should_upload_keys:
            await client.keys_upload()
        await self.ensure_cross_signing(reset=reset_identity)
        # Every event, nio's schema passed or not (BadEvent): a decrypted message nio finds of the
        # wrong shape, of a type or msgtype it has no class for (an emote, a poll, a sticker), is
        # still someone's words on screen, and still moderated.
        client.add_event_callback(self._on_event, ROOM_EVENTS)
        client.add_event_callback(self._on_undecryptable, MegolmEvent)
        client.add_event_callback(self._on_invite, InviteMemberEvent)
        client.add_response_callback(self._on_sync, SyncResponse)
        log.info("bot_started", user_id=self.user_id, device_id=device_id)
        if sync:
            # From the token kept last: what came after it may have been handled before a crash.
            self._replaying = True
            first = await client.sync(timeout=0, full_state=True)
            if isinstance(first, SyncResponse):
                self._replaying = False  # else the sync loop's first sync reads it again
                if self.checkpoints is not None:
                    self.checkpoints.mark(first.next_batch)
            self._sync_task = asyncio.create_task(self._sync_loop(), name="bot-sync")

    async def _ensure_avatar(self) -> None:
        await identity.ensure_avatar(self.store, self.api, self.user_id, self.avatar or default_avatar())

    async def cross_signing_keys(self, *, reset: bool = False) -> CrossSigningKeys:
        """The bot's identity from the store, made (and stored, before any upload) if absent."""
        return await identity.cross_signing_keys(self.store, self._store_key, reset=reset)

    async def ensure_cross_signing(self, *, reset: bool = False) -> CrossSigningKeys:
        """Upload the cross-signing keys (same keys again is a no-op for the homeserver; an
        appservice user may replace them without interactive auth) and sign this device."""
        assert self.client is not None
        keys = await self.cross_signing_keys(reset=reset)
        try:
            await self.api.request("POST", "/_matrix/client/v3/keys/device_signing/upload", user_id=self.user_id,
                                   json=keys.upload_body(self.user_id), retries=1)
        except MatrixError as exc:
            # Seen when the stored identity is older than the homeserver's (a restored backup, or
            # two stores for one bot): the homeserver won't take it back. Only a new identity helps.
            log.error("bot_identity_refused", master_key=keys.master_public, error=str(exc)[:300])
            raise BridgeError(
                "the homeserver refused the bot's cross-signing identity kept in the store (restored from an "
                "older backup, or another store runs this bot?). Run `ent-bridge bot reset-identity --yes` to "
                "give the bot a new identity (people who verified the bot will have to verify it again)") from exc
        query = await self.api.request("POST", "/_matrix/client/v3/keys/query", user_id=self.user_id,
                                       json={"device_keys": {self.user_id: [self.device_id]}})
        device = (query.get("device_keys") or {}).get(self.user_id, {}).get(self.device_id)
        if device is None:
            raise BridgeError("the homeserver has no keys for the bot's device")
        ssk_id = f"ed25519:{keys.self_signing_public}"
        if ssk_id not in (device.get("signatures") or {}).get(self.user_id, {}):
            signed_device = keys.sign_device(device, self.user_id)
            resp = await self.api.request("POST", "/_matrix/client/v3/keys/signatures/upload", user_id=self.user_id,
                                          json={self.user_id: {self.device_id: signed_device}})
            if resp.get("failures"):
                raise BridgeError(f"the homeserver refused the device signature: {resp['failures']}")
            log.info("bot_device_signed", device_id=self.device_id)
        return keys

    async def _sync_loop(self) -> None:
        assert self.client is not None
        while True:
            try:
                await self.client.sync_forever(timeout=SYNC_TIMEOUT_MS, full_state=False)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the loop must survive homeserver hiccups
                log.warning("bot_sync_failed", error=type(exc).__name__)
                await asyncio.sleep(2)

    async def _on_sync(self, response: SyncResponse) -> None:
        self._replaying = False  # called once this sync's messages were queued
        self.syncs += 1
        if self.checkpoints is not None:
            self.checkpoints.mark(response.next_batch)
        async with self._synced:
            self._synced.notify_all()

    async def _on_event(self, room: Any, event: Any) -> None:
        if getattr(event, "decrypted", False):
            self._read(str(event.event_id))
        source = getattr(event, "source", None) or {}
        etype = source.get("type")
        if etype not in MESSAGE_TYPES or event.sender == self.user_id:
            return
        decrypted = bool(getattr(event, "decrypted", False))
        log.info("bot_message_received", room_id=room.room_id, event_id=event.event_id, sender=event.sender,
                 decrypted=decrypted, type=etype, parsed=not isinstance(event, BadEvent))
        await self._submit(*received_of(room.room_id, event.event_id, event.sender, event, decrypted=decrypted))

    async def _submit(self, msg: ReceivedMessage, reaction: ReceivedReaction | None) -> None:
        """Queued behind the room's earlier events: the sync loop goes on with other rooms meanwhile.
        Read again after a restart, an event already handled is not handled twice (one record for
        the message hooks and the reaction hooks alike: both or neither run again)."""
        handled, again = self.handled, self._replaying

        async def work() -> None:
            if again and handled is not None and await handled.seen(msg.event_id):
                log.info("bot_event_already_handled", room_id=msg.room_id, event_id=msg.event_id)
                return
            await run_hooks(self.message_hooks, msg, room_id=msg.room_id, event_id=msg.event_id)
            if reaction is not None:
                await run_hooks(self.reaction_hooks, reaction, room_id=msg.room_id, event_id=msg.event_id)
            if handled is not None:
                handled.done(msg.event_id)

        await self.lanes.submit(msg.room_id, work)

    async def _on_invite(self, room: Any, event: Any) -> None:
        """Someone of this homeserver opens a direct chat with the bot (for `!aide`): it joins. An
        invite from another server is left unanswered."""
        if event.state_key != self.user_id or getattr(event, "membership", None) != "invite":
            return
        if event.sender.split(":", 1)[-1] != self.user_id.split(":", 1)[-1]:
            log.info("bot_invite_ignored", room_id=room.room_id, sender=event.sender)
            return
        try:
            await self.api.join(room.room_id, as_user=self.user_id)
            log.info("bot_joined_on_invite", room_id=room.room_id, sender=event.sender)
        except MatrixError as exc:
            log.warning("bot_join_failed", room_id=room.room_id, error=str(exc))

    def _read(self, event_id: str) -> None:
        self._decrypted[event_id] = None
        if len(self._decrypted) > RECENT_DECRYPTED:
            del self._decrypted[next(iter(self._decrypted))]
        awaited = self._awaited.pop(event_id, None)
        if awaited is not None and not awaited.done():
            awaited.set_result(None)

    async def has_decrypted(self, event_id: str, *, wait_s: float = 0.0) -> bool:
        """Has the bot decrypted this event (lately, within `wait_s` from now, or before a
        restart: the events it handled are on record)? The common case, a message the sync
        decrypts a moment after the homeserver's transaction brought it, costs no store read."""
        if event_id in self._decrypted:
            return True
        if wait_s > 0:
            awaited = self._awaited.setdefault(event_id, asyncio.get_running_loop().create_future())
            try:
                await asyncio.wait_for(asyncio.shield(awaited), wait_s)
                return True
            except TimeoutError:
                pass
            finally:
                self._awaited.pop(event_id, None)
        return self.handled is not None and await self.handled.seen(event_id)

    async def read_late(self, event: dict[str, Any], *, first: MessageHook) -> bool:
        """An encrypted event of a homeserver transaction that the sync did not decrypt, tried
        again with the keys held now. Read, it goes to the message hooks like any decrypted
        message, `first` (moderation) awaited on its own: if it fails, the event is not counted as
        read, and the transaction's event, still on record, is tried again."""
        late = read_late(self.client, event)
        msg = late.message
        if msg is not None:
            log.info("bot_message_read_late", room_id=msg.room_id, event_id=msg.event_id, sender=msg.sender)
            await first(msg)
            await run_hooks([h for h in self.message_hooks if h != first], msg, room_id=msg.room_id,
                            event_id=msg.event_id)
            if late.reaction is not None:  # as from the sync: a late key loses no confirmation
                await run_hooks(self.reaction_hooks, late.reaction, room_id=msg.room_id, event_id=msg.event_id)
            if self.handled is not None:
                self.handled.done(msg.event_id)
        if late.read:
            self._read(str(event.get("event_id")))
        return late.read

    async def _on_undecryptable(self, room: Any, event: MegolmEvent) -> None:
        log.warning("bot_undecryptable", room_id=room.room_id, event_id=event.event_id,
                    sender=event.sender, session_id=event.session_id)

    async def wait_for_room(self, room_id: str, *, timeout: float = 20.0) -> None:
        """Until the sync loop has seen the room (created or joined) and its members."""
        assert self.client is not None

        async def seen() -> None:
            async with self._synced:
                await self._synced.wait_for(lambda: room_id in self.client.rooms)  # type: ignore[union-attr]

        await asyncio.wait_for(seen(), timeout)

    async def send_notice(self, room_id: str, text: str, *, html: str | None = None, txn_id: str | None = None,
                          extra: dict[str, Any] | None = None) -> str:
        """Send an m.notice, encrypted when the room is; returns the event id. extra: more content
        (a reply's m.relates_to, m.mentions)."""
        assert self.client is not None
        await self.wait_for_room(room_id)
        if self.client.should_query_keys:
            try:
                await self.client.keys_query()
            except LocalProtocolError:
                pass  # the sync loop is querying right now
        content: dict[str, Any] = {"msgtype": "m.notice", "body": text, **(extra or {})}
        if html:
            content.update({"format": "org.matrix.custom.html", "formatted_body": html})
        resp = await self.client.room_send(room_id, "m.room.message", content, tx_id=txn_id,
                                           ignore_unverified_devices=True)
        if not isinstance(resp, RoomSendResponse):
            raise BridgeError(f"sending to {room_id} failed: {getattr(resp, 'message', resp)}")
        log.info("bot_notice_sent", room_id=room_id, event_id=resp.event_id,
                 encrypted=self.client.rooms[room_id].encrypted)
        return str(resp.event_id)

    async def stop(self) -> None:
        try:
            await cancel_and_wait(self._sync_task)
        except Exception as exc:  # noqa: BLE001 - stopping must go on whatever the loop died of
            log.warning("bot_sync_loop_ended_with_error", error=type(exc).__name__)
        self._sync_task = None
        # What was received is handled before the client closes (its requests in flight included);
        # a hook stuck on a homeserver that no longer answers doesn't keep the bridge from stopping.
        try:
            await asyncio.wait_for(self.lanes.join(), timeout=STOP_WAIT_S)
        except TimeoutError:
            log.warning("bot_stopped_with_work_pending", pending=self.lanes.pending)
            await self.lanes.cancel()
        if self.checkpoints is not None:
            await self.checkpoints.close()
            self.checkpoints = None
        if self.handled is not None:
            await self.handled.close()
            self.handled = None
        if self.client is not None:
            await self.client.close()
            self.client = None
