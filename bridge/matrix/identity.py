"""The bot's lasting identity, kept in the store: its device id, its avatar, its cross-signing keys."""

from __future__ import annotations

import hashlib
import os
import secrets
from typing import Protocol

from bridge.logging import get_logger
from bridge.matrix.appservice_api import AppserviceAPI
from bridge.matrix.cross_signing import CrossSigningKeys, seal, unseal

log = get_logger(component="bot")

DEVICE_KEY = "bot_device_id"
CROSS_SIGNING_KEY = "bot_cross_signing"
AVATAR_KEY = "bot_avatar"  # "digest mxc://…" of the avatar set last


class Values(Protocol):
    async def get_value(self, key: str) -> str | None: ...
    async def set_value(self, key: str, value: str) -> None: ...


async def device_id(store: Values, store_dir: str, user_id: str) -> str:
    """The device id kept last, or a new one when there is none or its crypto store is gone."""
    kept = await store.get_value(DEVICE_KEY)
    if kept is not None and not os.path.exists(os.path.join(store_dir, f"{user_id}_{kept}.db")):  # noqa: ASYNC240 - one stat at start-up
        # Reusing the id without its keys would clash with the keys the homeserver holds for it:
        # a new device, signed by the same identity, takes its place.
        log.warning("bot_crypto_store_lost", old_device_id=kept)
        kept = None
    if kept is not None:
        return kept
    made = "ENTBOT" + secrets.token_hex(4).upper()
    await store.set_value(DEVICE_KEY, made)
    return made


async def ensure_avatar(store: Values, api: AppserviceAPI, user_id: str, image: bytes) -> None:
    """Uploaded once per image (its digest is kept): every avatar change is a new membership event
    in each of the bot's rooms."""
    digest = hashlib.sha256(image).hexdigest()[:16]
    saved = (await store.get_value(AVATAR_KEY) or "").split()
    if len(saved) == 2 and saved[0] == digest and saved[1] == await api.avatar_url(user_id):
        return
    kind = "image/jpeg" if image.startswith(b"\xff\xd8\xff") else "image/png"
    uri = await api.upload(image, content_type=kind, filename="ent-bridge-bot", as_user=user_id)
    await api.set_avatar_url(user_id, uri)
    await store.set_value(AVATAR_KEY, f"{digest} {uri}")
    log.info("bot_avatar_set", uri=uri)


async def cross_signing_keys(store: Values, store_key: str, *, reset: bool = False) -> CrossSigningKeys:
    """The sealed keys from the store; new ones are stored before anything is uploaded, so an
    identity the homeserver knows is never one the bridge lost."""
    sealed = await store.get_value(CROSS_SIGNING_KEY)
    if sealed is not None and not reset:
        return unseal(sealed, store_key=store_key)
    keys = CrossSigningKeys.generate()
    await store.set_value(CROSS_SIGNING_KEY, seal(keys, store_key=store_key))
    log.info("bot_identity_created", master_key=keys.master_public)
    return keys
