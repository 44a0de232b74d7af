"""The bot's nio client: authenticated by the as_token, and reading back what a limited sync skipped."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from nio import AsyncClient, MessageDirection, RoomMemberEvent, RoomMessagesResponse, SyncResponse

from bridge.logging import get_logger

log = get_logger(component="bot")

GAP_PAGE = 100    # events a /messages request reads back
GAP_PAGES = 50    # at most 5,000 events read back into one room's gap; beyond, the room is reported
# Told of a room whose gap was not read whole: (room id, events read, "too_long" or "not_read").
GapUnread = Callable[[str, int, str], Awaitable[None]]


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
        if self.gap_unread is None:
            return
        try:
            await self.gap_unread(room_id, read, why)
        except Exception as exc:  # noqa: BLE001 - the sync goes on; the warning above stays
            log.error("bot_gap_report_failed", room_id=room_id, error=type(exc).__name__)
