"""Forgetting a person (RGPD art. 17): one path for `rgpd erase` and for leavers past their grace period."""

from __future__ import annotations

from typing import Protocol

from bridge.errors import BridgeError
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
    await store.delete_identity(person_id)
    await store.set_leavers(add={}, remove=[person_id])
    return created
