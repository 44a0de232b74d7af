"""The bot's lanes: a decrypted message waiting on the homeserver holds up no other room's, each
room's messages are handled in their order, and the sync loop is slowed (not memory grown) when
too much is pending."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from bridge.clock import SYSTEM
from bridge.lanes import Checkpoints, Handled, RoomLanes
from bridge.matrix.bot import Bot
from bridge.matrix.received import ReceivedMessage
from bridge.store.sqlite import SqliteStore


async def test_a_waiting_room_holds_up_no_other_and_keeps_its_order() -> None:
    lanes = RoomLanes()
    answered = asyncio.Event()
    seen: list[str] = []

    def work(name: str, wait: bool = False) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            if wait:
                await answered.wait()  # a redaction the homeserver is slow to answer
            seen.append(name)
        return run

    await lanes.submit("!a", work("a1", wait=True))
    await lanes.submit("!a", work("a2"))
    await lanes.submit("!b", work("b1"))
    await lanes.submit("!b", work("b2"))
    for _ in range(20):
        await asyncio.sleep(0)
    assert seen == ["b1", "b2"]  # submit returned at once, B went on, A's second waits behind its first
    assert lanes.pending == 2
    answered.set()
    await lanes.join()
    assert seen == ["b1", "b2", "a1", "a2"]
    assert lanes.pending == 0


async def test_a_failure_is_its_own_and_the_lane_goes_on() -> None:
    lanes = RoomLanes()
    seen: list[str] = []

    async def fails() -> None:
        raise RuntimeError("boom")

    async def after() -> None:
        seen.append("after")

    await lanes.submit("!a", fails)
    await lanes.submit("!a", after)
    await lanes.join()
    assert seen == ["after"]


async def test_submit_waits_when_the_limit_is_pending() -> None:
    lanes = RoomLanes(limit=2)
    gate = asyncio.Event()

    async def held() -> None:
        await gate.wait()

    await lanes.submit("!a", held)
    await lanes.submit("!b", held)
    third = asyncio.ensure_future(lanes.submit("!c", held))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not third.done()  # the sync loop waits: two are pending, the limit
    gate.set()
    await third
    await lanes.join()
    assert lanes.pending == 0


async def test_cancel_ends_stuck_work_and_frees_the_lanes() -> None:
    lanes = RoomLanes(limit=2)
    started = asyncio.Event()

    async def stuck() -> None:
        started.set()
        await asyncio.Event().wait()  # a homeserver that never answers

    await lanes.submit("!a", stuck)
    await lanes.submit("!a", stuck)  # queued behind it, never started
    await started.wait()
    await lanes.cancel()
    assert lanes.pending == 0
    done: list[str] = []

    async def later() -> None:
        done.append("later")

    await lanes.submit("!a", later)  # the limit's places were given back, the room's lane is free
    await lanes.submit("!b", later)
    await lanes.join()
    assert done == ["later", "later"]


async def test_the_bots_sync_loop_goes_on_while_a_rooms_hooks_wait() -> None:
    """The bot's message callback returns once the message is queued: while moderation of room A's
    message waits on the homeserver, room B's message (in the same sync) is handled. (Before, the
    callback awaited the hooks, and B waited for A.)"""
    answered = asyncio.Event()
    handled: list[str] = []

    async def hook(msg: ReceivedMessage) -> None:
        if msg.room_id == "!a:s":
            await answered.wait()
        handled.append(msg.event_id)

    bot = Bot(homeserver_url="http://127.0.0.1:1", user_id="@bot:s", store_dir="/nonexistent", store_key="k",
              display_name="bot", api=cast(Any, None), as_token="t", store=cast(Any, None), message_hooks=[hook])

    def event(room: str, n: int) -> tuple[Any, Any]:
        return (SimpleNamespace(room_id=room),
                SimpleNamespace(sender="@p:s", event_id=f"${room}{n}", body="x", decrypted=True,
                                source={"type": "m.room.message", "content": {"msgtype": "m.text", "body": "x"}}))

    async def one_sync() -> None:  # nio calls back each event of a sync in turn
        for room, n in (("!a:s", 1), ("!a:s", 2), ("!b:s", 1)):
            await bot._on_event(*event(room, n))

    sync = asyncio.ensure_future(one_sync())
    for _ in range(20):
        await asyncio.sleep(0)
    assert handled == ["$!b:s1"]
    assert sync.done()
    answered.set()
    await bot.lanes.join()
    assert handled == ["$!b:s1", "$!a:s1", "$!a:s2"]


async def test_a_sync_token_is_saved_once_the_messages_before_it_were_handled() -> None:
    """(nio saved it as the sync arrived: a bridge that died while moderating lost those messages.)"""
    lanes = RoomLanes()
    saved: list[str] = []
    keep = Checkpoints(lanes, saved.append)
    keep.start()
    answered = asyncio.Event()

    async def slow() -> None:
        await answered.wait()

    async def quick() -> None:
        pass

    await lanes.submit("!a", slow)
    keep.mark("t1")
    await lanes.submit("!b", quick)
    keep.mark("t2")
    for _ in range(20):
        await asyncio.sleep(0)
    assert saved == []  # t1 waits for A's message; t2 comes after t1
    answered.set()
    await lanes.join()
    await keep.close()
    assert saved == ["t1", "t2"]


async def test_after_cancelled_work_no_later_token_is_saved() -> None:
    """A stop that could not wait: the next start reads those messages again."""
    lanes = RoomLanes()
    saved: list[str] = []
    keep = Checkpoints(lanes, saved.append)
    keep.start()
    keep.mark("t0")  # nothing pending: kept at once

    async def stuck() -> None:
        await asyncio.Event().wait()

    async def quick() -> None:
        pass

    for _ in range(5):
        await asyncio.sleep(0)
    await lanes.submit("!a", stuck)
    keep.mark("t1")
    await lanes.cancel()
    await lanes.submit("!b", quick)
    keep.mark("t2")
    await lanes.join()
    await keep.close()
    assert saved == ["t0"]
    assert keep.held


def _text(room: str, event_id: str) -> tuple[Any, Any]:
    return (SimpleNamespace(room_id=room),
            SimpleNamespace(sender="@p:s", event_id=event_id, body="x", decrypted=True,
                            source={"type": "m.room.message", "content": {"msgtype": "m.text", "body": "x"}}))


async def test_what_a_restart_reads_again_is_not_handled_twice(tmp_path: Path) -> None:
    """The bridge handled $1, then died before its sync token was kept: the next start's first sync
    brings $1 again (and $2, new). $1's hooks (moderation: a second strike; an admin's command run
    again) don't run twice; $2's do. What the bot handled never tells the dispatcher an event of a
    homeserver transaction was handled."""
    store = SqliteStore(str(tmp_path / "b.db"))
    await store.open()
    seen: list[str] = []

    async def hook(msg: ReceivedMessage) -> None:
        seen.append(msg.event_id)

    def bot() -> Bot:
        made = Bot(homeserver_url="http://127.0.0.1:1", user_id="@bot:s", store_dir="/nonexistent", store_key="k",
                   display_name="bot", api=cast(Any, None), as_token="t", store=store, message_hooks=[hook])
        made.handled = Handled(store, SYSTEM)
        made.handled.start()
        return made

    first = bot()
    await first._on_event(*_text("!a:s", "$1"))
    await first.lanes.join()
    assert first.handled is not None
    await first.handled.close()  # written behind the handling; then the process dies

    second = bot()
    second._replaying = True  # its first sync, from the token kept before $1
    await second._on_event(*_text("!a:s", "$1"))
    await second._on_event(*_text("!a:s", "$2"))
    await second.lanes.join()
    assert seen == ["$1", "$2"]
    second._replaying = False  # later syncs bring only what is new: no lookup
    await second._on_event(*_text("!a:s", "$3"))
    await second.lanes.join()
    assert seen == ["$1", "$2", "$3"]
    assert await store.handled(["$1", "$2"]) == set()  # the dispatcher's record is its own
    assert second.handled is not None
    await second.handled.close()
    await store.close()


class _FailingStore:
    def __init__(self) -> None:
        self.failing = True
        self.written: list[str] = []

    async def handled(self, event_ids: Collection[str]) -> set[str]:
        raise ConnectionError("the database went away")

    async def events_done(self, items: list[tuple[str, int]], *, event_ids: Collection[str] = (),
                          now_ms: int = 0) -> None:
        if self.failing:
            raise ConnectionError("the database went away")
        self.written.extend(event_ids)


async def test_a_store_that_fails_loses_no_message() -> None:
    """Looked up on a store that fails, an event is handled (twice rather than never); ids not
    written are kept and written once the store answers again."""
    store = _FailingStore()

    class Ticks:
        def now_ms(self) -> int:
            return 0

        async def sleep(self, seconds: float) -> None:
            await asyncio.sleep(0)

    handled = Handled(store, cast(Any, Ticks()))
    handled.start()
    assert not await handled.seen("$x")
    handled.done("$1")
    for _ in range(20):
        await asyncio.sleep(0)
    assert store.written == []
    assert await handled.seen("$1")  # waiting to be written: known all the same
    store.failing = False
    handled.done("$2")
    await handled.close()
    assert store.written == ["bot $1", "bot $2"]
