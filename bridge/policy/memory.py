"""Moderation's memory (pure): flood windows, strikes, quiet-hours answers and mutes, with time passed in.

The engine (`evaluate`) judges one message; this object remembers what it needs across messages
and turns the engine's decisions into what is to be done now: a second automatic answer within
12 hours is dropped, a mute of someone already muted is dropped, repeated offences escalate to a
mute. No I/O and no clock: `now` comes from the caller, so every rule is testable to the minute.
"""

from __future__ import annotations

from array import array
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, replace
from datetime import datetime

from bridge.policy.engine import NOT_MESSAGES, Decision, Message, evaluate, strike_escalation
from bridge.policy.model import Profile

QUIET_ANSWER_EVERY_MS = 12 * 3_600_000  # one automatic answer per evening, not one per message
JUDGED_KEEP = 20_000  # event ids remembered (a few minutes of a busy district)
# No strike: an evening's answer is no offence, and a message unreadable to moderation may be an
# honest app's fault (it is taken down all the same; a flood of them still mutes).
NO_STRIKE = frozenset({"quiet_hours", "undecryptable"})
Key = tuple[str, str]  # (room id, user id)


def _windows_ms(profile: Profile) -> tuple[int, int, int]:
    """How far back a profile's rules look: (flood, waves across rooms, strikes)."""
    return (profile.flood.per_seconds * 1000 if profile.flood else 0,
            int(profile.fan_out.window_minutes * 60_000) if profile.fan_out else 0,
            int(profile.strikes.window_hours * 3_600_000))


@dataclass(frozen=True)
class Outcome:
    """What to do about one message: decisions with only the actions still due, and when a mute
    decided now ends (ms)."""

    decisions: tuple[Decision, ...]
    mute_until_ms: int | None = None


NOTHING = Outcome(())  # what most messages come to: one shared value, not one object per message
FORGET_EVERY_MS = 10 * 60_000  # how often (in judged time) what no rule can still read is let go


class ModerationMemory:
    """Times are kept in `array`s, which the garbage collector does not walk: a district's
    thousands of senders each had a deque of boxed ints, and every full collection walked them
    all while the event loop waited (the pauses grew with the traffic and cost the p99)."""

    def __init__(self, *, window: int = 200) -> None:
        self._window = window
        self._recent: dict[Key, array[int]] = {}  # the sender's message times in the room, last `window`
        self._strikes: dict[Key, list[int]] = defaultdict(list)
        self._answered: dict[Key, int] = {}
        self._muted_until: dict[Key, int] = {}
        self._judged: OrderedDict[str, Outcome] = OrderedDict()  # recent event ids: each judged once
        # Across rooms, per sender: the times of their messages and (beside, same order) the rooms'.
        self._posted: dict[str, array[int]] = {}
        self._posted_rooms: dict[str, array[int]] = {}
        self._room_numbers: dict[str, int] = {}  # room id -> its number in `_posted_rooms`
        self._waved_until: dict[str, int] = {}  # sender -> end of the mute a wave earned
        self._windows_ms: tuple[int, int, int] = (0, 0, 0)  # the longest flood, wave, strike windows read
        self._forgotten_at: int | None = None

    def judge(self, profile: Profile, msg: Message, *, now: datetime,
              compiled_words: tuple[str, ...] | None = None, read: list[Decision] | None = None) -> Outcome:
        """The same event handed over again (its actions failed and the dispatcher retries it) is
        judged once: the same outcome comes back, to be acted on again (the actions are
        idempotent), with no second strike and no second flood count. `read`: the message's
        content already read (`engine.read_content`)."""
        if (known := self._judged.get(msg.event_id)) is not None:
            return known
        outcome = self._judge(profile, msg, now=now, compiled_words=compiled_words, read=read)
        outcome = outcome if outcome.decisions or outcome.mute_until_ms is not None else NOTHING
        self._judged[msg.event_id] = outcome
        if len(self._judged) > JUDGED_KEEP:
            self._judged.popitem(last=False)
        return outcome

    def _judge(self, profile: Profile, msg: Message, *, now: datetime,
               compiled_words: tuple[str, ...] | None, read: list[Decision] | None) -> Outcome:
        key = (msg.room_id, msg.sender)
        now_ms = int(now.timestamp() * 1000)
        windows = _windows_ms(profile)
        if windows != self._windows_ms:
            (flood, wave, strike), (f, w, st) = self._windows_ms, windows
            self._windows_ms = (max(flood, f), max(wave, w), max(strike, st))
        if self._forgotten_at is None or now_ms - self._forgotten_at >= FORGET_EVERY_MS:
            self.forget_idle(now_ms)
        recent = self._recent.get(key)
        if recent is None:
            recent = self._recent[key] = array("q")
        counted = msg.type not in NOT_MESSAGES  # a reaction, a name: neither a flood's nor a wave's
        if counted:
            recent.append(now_ms)
            if len(recent) > self._window:
                del recent[0]
        decisions = evaluate(profile, msg, now=now, recent_ms=recent, compiled_words=compiled_words, read=read)
        if counted:
            decisions += self._fan_out(profile, msg, now_ms)
        if any(d.protection not in NO_STRIKE for d in decisions):
            strikes = self._strikes[key]
            strikes.append(now_ms)
            minutes = strike_escalation(strikes, now_ms, profile)
            if minutes and not any("mute" in d.actions for d in decisions):
                decisions.append(Decision("strikes", ("mute",), "récidive", {"mute_minutes": minutes}))
                strikes.clear()
        out: list[Decision] = []
        mute_until: int | None = None
        for d in decisions:
            actions = []
            for action in d.actions:
                if action == "notice":
                    if now_ms - self._answered.get(key, -QUIET_ANSWER_EVERY_MS) < QUIET_ANSWER_EVERY_MS:
                        continue
                    self._answered[key] = now_ms
                elif action == "mute":
                    if self.muted(msg.room_id, msg.sender, now_ms=now_ms) or mute_until is not None:
                        continue  # the current mute runs its course
                    mute_until = now_ms + int(float(d.detail.get("mute_minutes", 60)) * 60_000)
                    self._muted_until[key] = mute_until
                actions.append(action)
            out.append(replace(d, actions=tuple(actions)))
        return Outcome(tuple(out), mute_until)

    def _fan_out(self, profile: Profile, msg: Message, now_ms: int) -> list[Decision]:
        """Across rooms, and for moderators too (a teacher's account can be hijacked): only the
        threshold differs. Once per wave: the mute it earns covers what follows."""
        rule = profile.fan_out
        if rule is None:
            return []
        posted = self._posted.get(msg.sender)
        if posted is None:
            posted = self._posted[msg.sender] = array("q")
            self._posted_rooms[msg.sender] = array("q")
        numbers = self._posted_rooms[msg.sender]
        number = self._room_numbers.get(msg.room_id)
        if number is None:
            number = self._room_numbers[msg.room_id] = len(self._room_numbers)
        posted.append(now_ms)
        numbers.append(number)
        stale = 0
        while stale < len(posted) and now_ms - posted[stale] > rule.window_minutes * 60_000:
            stale += 1
        stale = max(stale, len(posted) - self._window)
        if stale:
            del posted[:stale]
            del numbers[:stale]
        rooms = len(set(numbers))
        limit = rule.max_rooms_moderators if msg.sender_power >= profile.exempt_power else rule.max_rooms
        if rooms <= limit or self._waved_until.get(msg.sender, 0) > now_ms:
            return []
        self._waved_until[msg.sender] = now_ms + int(rule.mute_minutes * 60_000)
        return [Decision("fan_out", rule.action, f"messages dans {rooms} salons en {rule.window_minutes:g} min",
                         {"mute_minutes": rule.mute_minutes, "everywhere": True})]

    def forget_idle(self, now_ms: int) -> int:
        """Let go of what no rule can read any more (nobody's memory grows for good: a district's
        every sender stayed in it until the process ended). Returns how many entries went."""
        self._forgotten_at = now_ms
        flood, wave, strike = (now_ms - window for window in self._windows_ms)
        idle = [k for k, times in self._recent.items() if not times or times[-1] < flood]
        idle_senders = [u for u, times in self._posted.items() if not times or times[-1] < wave]
        struck = [k for k, times in self._strikes.items() if not times or times[-1] < strike]
        answered = [k for k, at in self._answered.items() if now_ms - at >= QUIET_ANSWER_EVERY_MS]
        unmuted = [k for k, end in self._muted_until.items() if end <= now_ms]
        unwaved = [u for u, end in self._waved_until.items() if end <= now_ms]
        for key in idle:
            del self._recent[key]
        for sender in idle_senders:
            del self._posted[sender], self._posted_rooms[sender]
        for key in struck:
            del self._strikes[key]
        for key in answered:
            del self._answered[key]
        for key in unmuted:
            del self._muted_until[key]
        for sender in unwaved:
            del self._waved_until[sender]
        return len(idle) + len(idle_senders) + len(struck) + len(answered) + len(unmuted) + len(unwaved)

    def muted(self, room_id: str, user_id: str, *, now_ms: int) -> bool:
        return self._muted_until.get((room_id, user_id), 0) > now_ms

    def remember_mute(self, room_id: str, user_id: str, *, until_ms: int) -> None:
        """A mute found in the store at start-up (set before a restart)."""
        self._muted_until[(room_id, user_id)] = until_ms

    def forget_mute(self, room_id: str, user_id: str) -> None:
        self._muted_until.pop((room_id, user_id), None)
