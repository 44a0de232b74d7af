"""Forgetting a person (RGPD art. 17): one path for `rgpd erase` and for leavers past their grace period."""

from __future__ import annotations

import json
from typing import Protocol

from bridge.errors import BridgeError, MForbidden, MNotFound
from bridge.matrix.port import Homeserver
from bridge.outsider_guard import OUTSIDERS_KEY, without
from bridge.people_keys import ABSENCES_KEY, ANNOUNCEMENTS_KEY
from bridge.rooms.pauses import PAUSES_KEY
from bridge.rooms.pauses import decode as decode_pauses
from bridge.rooms.pauses import encode as encode_pauses
from bridge.store.base import Store


class Deactivation(Protocol):
    async def deactivate(self, user_id: str, *, erase: bool) -> None: ...


class ErasureNeedsAdmin(BridgeError):
    """The bridge created the account, and deactivating it needs the homeserver's admin token."""


async def erase_person(store: Store, person_id: str, user_id: str, *, accounts: Deactivation | None) -> bool:
    """Forget the person's identity and departure date; an account the bridge created is
    deactivated with erasure first (so a failure leaves the person known, and retried).
    Returns whether an account was deactivated."""
    created = user_id in await store.provisioned()
    if created:
        if accounts is None:
            raise ErasureNeedsAdmin("the bridge created this person's account; erasing it needs "
                                    "homeserver.admin_token")
        await accounts.deactivate(user_id, erase=True)
        await store.forget_provisioned(user_id)
    await forget_user(store, user_id)
    await store.delete_identity(person_id)
    await store.set_leavers(add={}, remove=[person_id])
    return created


async def forget_user(store: Store, user_id: str) -> None:
    """Everything else the store holds that names the Matrix id: mutes, the rooms' cached state
    (read again from the homeserver at the next sync), the outsider rule, absences,
    announcements and the power levels a pause will put back. The audit log names people by
    keyed pseudonyms only."""
    for room_id, user, _ in await store.mutes():
        if user == user_id:
            await store.delete_mute(room_id, user)
    cached = await store.observed_rooms()
    # A Matrix id in JSON is written as is (no character of one needs escaping).
    stale = [room_id for room_id, state in cached.items() if f'"{user_id}"' in state]
    if stale:
        await store.put_observed({}, drop=stale)
    rule = await store.get_value(OUTSIDERS_KEY)
    if rule is not None:
        await store.set_value(OUTSIDERS_KEY, without(rule, user_id))
    if absences := json.loads(await store.get_value(ABSENCES_KEY) or "{}"):
        if absences.pop(user_id, None) is not None:
            await store.set_value(ABSENCES_KEY, json.dumps(absences))
    if items := json.loads(await store.get_value(ANNOUNCEMENTS_KEY) or "{}"):
        # Their own announcements go; their confirmations of others' are forgotten.
        kept = {e: {**i, "confirmed": {u: t for u, t in i["confirmed"].items() if u != user_id}}
                for e, i in items.items() if i["author"] != user_id}
        if kept != items:
            await store.set_value(ANNOUNCEMENTS_KEY, json.dumps(kept, sort_keys=True))
    if pauses := decode_pauses(await store.get_value(PAUSES_KEY)):
        # A paused school's stored power levels, to be put back: without them.
        for pause in pauses.values():
            for levels in pause["rooms"].values():
                (levels.get("users") or {}).pop(user_id, None)
        await store.set_value(PAUSES_KEY, encode_pauses(pauses))


async def memberships(api: Homeserver, store: Store, user_id: str, *, actors: tuple[str, ...]
                      ) -> list[dict[str, object]]:
    """Where the homeserver has the person, among the bridge's rooms (archived ones included)."""
    out: list[dict[str, object]] = []
    for record in await store.all_rooms():
        for actor in actors:
            try:
                state = await api.membership(record.room_id, user_id, as_user=actor)
            except (MForbidden, MNotFound):
                continue
            if state is not None:
                try:
                    name = str((await api.get_state(record.room_id, "m.room.name", as_user=actor)).get("name", ""))
                except MNotFound:
                    name = ""
                out.append({"room": name, "room_id": record.room_id, "kind": record.template, "membership": state,
                            "archived": record.archived})
            break
    return sorted(out, key=lambda m: (str(m["kind"]), str(m["room"])))


async def remove_from_rooms(api: Homeserver, store: Store, user_id: str, *, actors: tuple[str, ...],
                            reason: str) -> list[str]:
    """Take the person out of every room the bridge made where they still are (archived rooms
    keep their members for a reading period): room ids they were removed from."""
    removed = []
    for record in await store.all_rooms():
        for actor in actors:  # the bot, or the keyless user in the rooms it runs
            try:
                if await api.membership(record.room_id, user_id, as_user=actor) in ("join", "invite"):
                    await api.kick(record.room_id, user_id, as_user=actor, reason=reason)
                    removed.append(record.room_id)
                break
            except (MForbidden, MNotFound):
                continue
    return removed
