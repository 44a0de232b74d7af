"""The bot's nio client: authenticated by the as_token, reading back what a limited sync skipped,
and keeping a fallback key on the server (nio knows none)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from aiohttp import ClientResponse
from nio import (
    AsyncClient,
    KeysUploadError,
    KeysUploadResponse,
    MessageDirection,
    RoomMemberEvent,
    RoomMessagesResponse,
    SyncResponse,
)
from nio.api import Api

from bridge.logging import get_logger

log = get_logger(component="bot")

GAP_PAGE = 100    # events a /messages request reads back
GAP_PAGES = 50    # at most 5,000 events read back into one room's gap; beyond, the room is reported
# Told of a room whose gap was not read whole: (room id, events read, "too_long" or "not_read").
GapUnread = Callable[[str, int, str], Awaitable[None]]
FALLBACK = "signed_curve25519"


class AppserviceNioClient(AsyncClient):
    """nio client authenticated by the as_token: every request names the user and the device.

    Synapse attaches the request to that device (MSC3202/MSC4190 masquerading), so /sync
    delivers the device's to-device messages and key uploads land on the right device.

    A sync gives at most a few events a room (the timeline is "limited" beyond): those before are
    read back with /messages, down to the previous sync's token, and handled first, so a burst
    of messages while the bot was busy or stopped is moderated whole instead of its last ten.
    What can't be read back (over `GAP_PAGES` pages, or refused) is told to `gap_unread`: those
    messages were not moderated, and people must know.
    """

    gap_unread: GapUnread | None = None
    # What the last sync said of the device's fallback keys (None: no sync body seen yet).
    unused_fallback_keys: list[str] | None = None
    _unread_gaps: tuple[tuple[str, int, str], ...] = ()  # (room, events read, why), of the sync being taken in

    async def parse_body(self, transport_response: ClientResponse) -> dict[Any, Any]:
        body: dict[Any, Any] = await super().parse_body(transport_response)
        if "next_batch" in body:  # a sync's body: nio's SyncResponse keeps nothing of fallback keys
            found = body.get("device_unused_fallback_key_types")
            self.unused_fallback_keys = [str(k) for k in found] if isinstance(found, list) else None
        return body

    async def ensure_fallback_key(self) -> bool:
        """Upload a new fallback key when the server says it holds no unused one. Why: the bot's
        50 one-time keys can all be claimed between two of its syncs (a Monday morning's new
        devices); a client that then finds no key can't open a session with the bot, shares no
        room key with it, and its messages would be unreadable to moderation. The server hands
        out the fallback key instead, and vodozemac takes a session opened with it."""
        if self.olm is None or self.unused_fallback_keys is None or FALLBACK in self.unused_fallback_keys:
            return False
        account = self.olm.account._account  # vodozemac's Account: nio has no call for fallback keys
        account.generate_fallback_key()
        key_id, key = next(iter(account.fallback_key.items()))
        signed: dict[str, Any] = {"key": key.to_base64(), "fallback": True}
        signed["signatures"] = {self.user_id: {f"ed25519:{self.device_id}": self.olm.sign_json(signed)}}
        method, path, data = Api.keys_upload(self.access_token, {"fallback_keys": {f"{FALLBACK}:{key_id}": signed}})
        # nio's answer to a key upload marks the keys published and saves the account (its store).
        answer = await self._send(KeysUploadResponse, method, path, data)
        if isinstance(answer, KeysUploadError):
            log.warning("bot_fallback_key_not_uploaded", error=str(answer.message)[:200])
            return False
        self.unused_fallback_keys = [*self.unused_fallback_keys, FALLBACK]
        log.info("bot_fallback_key_uploaded", key_id=key_id)
        return True

    async def send(self, method: str, path: str, data: Any = None, headers: dict[str, str] | None = None,
                   trace_context: Any = None, timeout: float | None = None) -> Any:
        extra = urlencode({"user_id": self.user_id, "device_id": self.device_id})
        path = f"{path}{'&' if '?' in path else '?'}{extra}"
        return await super().send(method, path, data, headers, trace_context, timeout)

    async def _handle_sync(self, response: SyncResponse) -> None:
        since = self.next_batch or self.loaded_sync_token
        if since and response.next_batch != self.next_batch:  # nio ignores a sync it already had
            for room_id, joined in response.rooms.join.items():
                timeline = joined.timeline
                if timeline.limited and timeline.prev_batch:
                    timeline.events[:0] = await self._read_gap(room_id, timeline.prev_batch, since)
        await super()._handle_sync(response)
        # Told once this sync is taken in, not while reading it: the notice to the moderators
        # waits for the client to know their room, which this very sync may be bringing (at a
        # start, the report waited 20 s for it, held the sync up as long, and was lost).
        await self._tell_gaps()
        try:
            await self.ensure_fallback_key()
        except Exception as exc:  # noqa: BLE001 - the sync's messages come first; tried again at the next
            log.warning("bot_fallback_key_not_uploaded", error=type(exc).__name__)

    async def _read_gap(self, room_id: str, start: str, stop: str) -> list[Any]:
        """The room's events between two sync positions, oldest first. State is left out: the
        sync's state section already holds it as of the timeline's start. What came before the
        bot's own join was never its business (and its keys were never shared with it)."""
        found: list[Any] = []
        for _ in range(GAP_PAGES):
            page = await self.room_messages(room_id, start=start, end=stop, direction=MessageDirection.back,
                                            limit=GAP_PAGE)
            if not isinstance(page, RoomMessagesResponse):
                log.warning("bot_gap_not_read", room_id=room_id, error=str(getattr(page, "message", page))[:200])
                await self._unread(room_id, len(found), "not_read")
                break
            for event in page.chunk:
                if isinstance(event, RoomMemberEvent) and event.state_key == self.user_id \
                        and event.membership == "join" and event.prev_membership != "join":
                    log.info("bot_gap_read", room_id=room_id, events=len(found))
                    return found[::-1]
                if event.source.get("state_key") is None:
                    found.append(event)
            if not page.chunk or not page.end or page.end == start:
                break
            start = page.end
        else:
            log.warning("bot_gap_too_long", room_id=room_id, events=len(found))
            await self._unread(room_id, len(found), "too_long")
        log.info("bot_gap_read", room_id=room_id, events=len(found))
        return found[::-1]

    async def _unread(self, room_id: str, read: int, why: str) -> None:
        self._unread_gaps = (*self._unread_gaps, (room_id, read, why))

    async def _tell_gaps(self) -> None:
        unread, self._unread_gaps = self._unread_gaps, ()
        tell = self.gap_unread
        if tell is None:
            return
        for room_id, read, why in unread:
            try:
                await tell(room_id, read, why)
            except Exception as exc:  # noqa: BLE001 - the sync goes on; the warning above stays
                log.error("bot_gap_report_failed", room_id=room_id, error=type(exc).__name__)
