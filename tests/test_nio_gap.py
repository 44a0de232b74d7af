"""The bot's client reads back what a limited sync skipped: oldest first, no state, nothing before its join."""

from __future__ import annotations

from typing import Any

from nio import AsyncClientConfig, RoomMessagesError, RoomMessagesResponse

from bridge.matrix import nio_client
from bridge.matrix.nio_client import AppserviceNioClient

BOT = "@bot:ent.test"
ROOM = "!r:ent.test"


def _message(n: int) -> dict[str, Any]:
    return {"type": "m.room.message", "event_id": f"$m{n}", "sender": "@p:ent.test", "origin_server_ts": n,
            "content": {"msgtype": "m.text", "body": f"m{n}"}}


def _member(user: str, membership: str, n: int) -> dict[str, Any]:
    return {"type": "m.room.member", "event_id": f"$j{n}", "sender": user, "state_key": user, "origin_server_ts": n,
            "content": {"membership": membership}}


def _client(pages: list[Any]) -> tuple[AppserviceNioClient, list[tuple[str | None, str | None]]]:
    client = AppserviceNioClient("http://127.0.0.1:9", BOT, device_id="D",
                                 config=AsyncClientConfig(encryption_enabled=False))
    client.restore_login(BOT, "D", "as_token")  # as the bot does
    asked: list[tuple[str | None, str | None]] = []

    async def room_messages(room_id: str, start: str | None = None, end: str | None = None, **_: Any) -> Any:
        asked.append((start, end))
        return pages.pop(0)

    client.room_messages = room_messages  # type: ignore[method-assign]
    return client, asked


def _page(events: list[dict[str, Any]], start: str, end: str | None) -> RoomMessagesResponse:
    body: dict[str, Any] = {"chunk": events, "start": start}
    if end is not None:
        body["end"] = end
    return RoomMessagesResponse.from_dict(body, ROOM)


async def test_the_gap_is_read_back_oldest_first_without_state_down_to_the_sync_token() -> None:
    newest_first = [_message(5), _member("@p:ent.test", "join", 4), _message(3)]
    client, asked = _client([_page(newest_first, "t0", "t1"), _page([_message(2), _message(1)], "t1", None)])
    events = await client._read_gap(ROOM, "t0", "s_since")
    assert [e.event_id for e in events] == ["$m1", "$m2", "$m3", "$m5"]
    assert asked == [("t0", "s_since"), ("t1", "s_since")]


async def test_what_came_before_the_bots_join_is_not_read() -> None:
    page = _page([_message(3), _member(BOT, "join", 2), _message(1)], "t0", "t1")
    client, asked = _client([page])
    assert [e.event_id for e in await client._read_gap(ROOM, "t0", "s")] == ["$m3"]
    assert len(asked) == 1


async def test_a_huge_gap_stops_at_its_bound_and_a_refusal_ends_the_read(monkeypatch: Any) -> None:
    monkeypatch.setattr(nio_client, "GAP_PAGES", 3)
    pages = [_page([_message(n)], f"t{n}", f"t{n + 1}") for n in range(5)]
    client, asked = _client(pages)
    assert [e.event_id for e in await client._read_gap(ROOM, "t0", "s")] == ["$m2", "$m1", "$m0"]
    assert len(asked) == 3
    refused, _ = _client([RoomMessagesError("M_FORBIDDEN")])
    assert await refused._read_gap(ROOM, "t0", "s") == []


async def test_what_cannot_be_read_back_is_told(monkeypatch: Any) -> None:
    """A gap over the bound, or refused: those messages were not moderated, and the bot says so
    (the moderator reports it) rather than only logging it."""
    monkeypatch.setattr(nio_client, "GAP_PAGES", 2)
    told: list[tuple[str, int, str]] = []

    async def gap_unread(room_id: str, read: int, why: str) -> None:
        told.append((room_id, read, why))

    long, _ = _client([_page([_message(n)], f"t{n}", f"t{n + 1}") for n in range(3)])
    long.gap_unread = gap_unread
    assert len(await long._read_gap(ROOM, "t0", "s")) == 2
    refused, _ = _client([_page([_message(9)], "t0", "t1"), RoomMessagesError("M_UNKNOWN")])
    refused.gap_unread = gap_unread
    assert [e.event_id for e in await refused._read_gap(ROOM, "t0", "s")] == ["$m9"]
    whole, _ = _client([_page([_message(1)], "t0", None)])
    whole.gap_unread = gap_unread
    await whole._read_gap(ROOM, "t0", "s")
    # Told once the sync is taken in (the moderators' room may come with it), not while reading it.
    assert told == []
    for client in (long, refused, whole):
        await client._tell_gaps()
    assert told == [(ROOM, 2, "too_long"), (ROOM, 1, "not_read")]  # nothing for the gap read whole
    await long._tell_gaps()
    assert len(told) == 2  # told once
