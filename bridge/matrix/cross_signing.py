"""The bot's cross-signing identity (pure): Ed25519 keys, canonical-JSON signatures, sealing at rest.

matrix-nio has no cross-signing; without it Element marks the bot's device "unsigned" and
clients that exclude insecure devices (MSC4153) neither decrypt it nor share keys with it.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bridge.errors import BridgeError


def canonical_json(obj: Any) -> bytes:
    """The spec's canonical JSON: sorted keys, no whitespace, UTF-8, no escaping of non-ASCII."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), sort_keys=True,
                      allow_nan=False).encode("utf-8")


def unpadded_b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _private(seed: bytes) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_key(seed: bytes) -> str:
    return unpadded_b64(_private(seed).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


def signed(obj: dict[str, Any], *, seed: bytes, user_id: str, key_id: str) -> dict[str, Any]:
    """A copy of obj with a signature over its canonical JSON (without signatures/unsigned)."""
    payload = {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}
    signature = unpadded_b64(_private(seed).sign(canonical_json(payload)))
    out = dict(obj)
    sigs = {u: dict(s) for u, s in (obj.get("signatures") or {}).items()}
    sigs.setdefault(user_id, {})[f"ed25519:{key_id}"] = signature
    out["signatures"] = sigs
    return out


@dataclass(frozen=True)
class CrossSigningKeys:
    master: bytes
    self_signing: bytes
    user_signing: bytes

    @classmethod
    def generate(cls) -> CrossSigningKeys:
        return cls(os.urandom(32), os.urandom(32), os.urandom(32))

    @property
    def master_public(self) -> str:
        return public_key(self.master)

    @property
    def self_signing_public(self) -> str:
        return public_key(self.self_signing)

    def key_object(self, user_id: str, usage: str, seed: bytes) -> dict[str, Any]:
        pub = public_key(seed)
        obj: dict[str, Any] = {"user_id": user_id, "usage": [usage], "keys": {f"ed25519:{pub}": pub}}
        if usage != "master":
            obj = signed(obj, seed=self.master, user_id=user_id, key_id=self.master_public)
        return obj

    def upload_body(self, user_id: str) -> dict[str, Any]:
        """Body of POST /keys/device_signing/upload."""
        return {
            "master_key": self.key_object(user_id, "master", self.master),
            "self_signing_key": self.key_object(user_id, "self_signing", self.self_signing),
            "user_signing_key": self.key_object(user_id, "user_signing", self.user_signing),
        }

    def sign_device(self, device_keys: dict[str, Any], user_id: str) -> dict[str, Any]:
        """The device's keys signed by the self-signing key, for POST /keys/signatures/upload."""
        clean = {k: v for k, v in device_keys.items() if k != "unsigned"}
        return signed(clean, seed=self.self_signing, user_id=user_id, key_id=self.self_signing_public)


def fingerprint(public: str) -> str:
    """The master key as people compare it: groups of four characters."""
    return " ".join(public[i:i + 4] for i in range(0, len(public), 4))


def _aead(store_key: str) -> AESGCM:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"ent-bridge cross-signing",
               info=b"seal v1").derive(store_key.encode())
    return AESGCM(key)


def seal(keys: CrossSigningKeys, *, store_key: str) -> str:
    """Encrypt the private keys with a key derived from the store key (AES-256-GCM)."""
    nonce = os.urandom(12)
    plain = keys.master + keys.self_signing + keys.user_signing
    return "v1:" + base64.b64encode(nonce + _aead(store_key).encrypt(nonce, plain, b"x-signing")).decode()


def unseal(text: str, *, store_key: str) -> CrossSigningKeys:
    if not text.startswith("v1:"):
        raise BridgeError("unknown format of the stored cross-signing keys")
    raw = base64.b64decode(text[3:])
    try:
        plain = _aead(store_key).decrypt(raw[:12], raw[12:], b"x-signing")
    except InvalidTag:
        raise BridgeError("cannot decrypt the stored cross-signing keys: wrong bot.store_key?") from None
    return CrossSigningKeys(plain[:32], plain[32:64], plain[64:96])
