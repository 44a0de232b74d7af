"""Moderation's memory (pure): flood windows, strikes, quiet-hours answers and mutes, with time passed in.

The engine (`evaluate`) judges one message; this object remembers what it needs across messages
and turns the engine's decisions into what is to be done now: a second automatic answer within
12 hours is dropped, a mute of someone already muted is dropped, repeated offences escalate to a
mute. No I/O and no clock: `now` comes from the caller, so every rule is testable to the minute.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict, deque
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


@dataclass(frozen=True)
class Outcome:
    """What to do about one message: decisions with only the actions still due, and when a mute
    decided now ends (ms)."""

    decisions: tuple[Decision, ...]
    mute_until_ms: int | None = None


class ModerationMemory:
    def __init__(self, *, window: int = 200) -> None:
        self._recent: dict[Key, deque[int]] = defaultdict(lambda: deque(maxlen=window))
        self._strikes: dict[Key, list[int]] = defaultdict(list)
        self._answered: dict[Key, int] = {}
        self._muted_until: dict[Key, int] = {}
        self._judged: OrderedDict[str, Outcome] = OrderedDict()  # recent event ids: each judged once
        self._posted: dict[str, deque[tuple[int, str]]] = defaultdict(lambda: deque(maxlen=window))
        self._waved_until: dict[str, int] = {}  # sender -> end of the mute a wave earned

    def judge(self, profile: Profile, msg: Message, *, now: datetime,
              compiled_words: tuple[str, ...] | None = None, read: list[Decision] | None = None) -> Outcome:
        """The same event handed over again (its actions failed and the dispatcher retries it) is
        judged once: the same outcome comes back, to be acted on again (the actions are
        idempotent), with no second strike and no second flood count. `read`: the message's
        content already read (`engine.read_content`)."""
        if (known := self._judged.get(msg.event_id)) is not None:
            return known
        outcome = self._judge(profile, msg, now=now, compiled_words=compiled_words, read=read)
        self._judged[msg.event_id] = outcome
        if len(self._judged) > JUDGED_KEEP:
            self._judged.popitem(last=False)
        return outcome

    def _judge(self, profile: Profile, msg: Message, *, now: datetime,
               compiled_words: tuple[str, ...] | None, read: list[Decision] | None) -> Outcome:
        key = (msg.room_id, msg.sender)
        now_ms = int(now.timestamp() * 1000)
        recent = self._recent[key]
        counted = msg.type not in NOT_MESSAGES  # a reaction, a name: neither a flood's nor a wave's
        if counted:
            recent.append(now_ms)
        decisions = evaluate(profile, msg, now=now, recent_ms=list(recent), compiled_words=compiled_words, read=read)
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
        posted = self._posted[msg.sender]
        posted.append((now_ms, msg.room_id))
        while posted and now_ms - posted[0][0] > rule.window_minutes * 60_000:
            posted.popleft()
        rooms = len({room for _, room in posted})
        limit = rule.max_rooms_moderators if msg.sender_power >= profile.exempt_power else rule.max_rooms
        if rooms <= limit or self._waved_until.get(msg.sender, 0) > now_ms:
            return []
        self._waved_until[msg.sender] = now_ms + int(rule.mute_minutes * 60_000)
        return [Decision("fan_out", rule.action, f"messages dans {rooms} salons en {rule.window_minutes:g} min",
                         {"mute_minutes": rule.mute_minutes, "everywhere": True})]

    def muted(self, room_id: str, user_id: str, *, now_ms: int) -> bool:
        return self._muted_until.get((room_id, user_id), 0) > now_ms

    def remember_mute(self, room_id: str, user_id: str, *, until_ms: int) -> None:
        """A mute found in the store at start-up (set before a restart)."""
        self._muted_until[(room_id, user_id)] = until_ms

    def forget_mute(self, room_id: str, user_id: str) -> None:
        self._muted_until.pop((room_id, user_id), None)
