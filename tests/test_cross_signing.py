"""The bot's cross-signing identity on a real Synapse, each signature checked independently."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from canonicaljson import encode_canonical_json  # Synapse's own implementation, not ours
from nacl.signing import VerifyKey
from unpaddedbase64 import decode_base64

from bridge.matrix.cross_signing import CrossSigningKeys, canonical_json, seal, unseal
from tests.conftest import config_file


def _verify(obj: dict[str, Any], signer: str, key_id: str, public_b64: str) -> None:
    payload = {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}
    signature = decode_base64(obj["signatures"][signer][f"ed25519:{key_id}"])
    VerifyKey(decode_base64(public_b64)).verify(encode_canonical_json(payload), signature)  # raises if bad


def test_canonical_json_matches_reference() -> None:
    obj = {"b": [1, {"é": "ü", "a": None}], "a": "\u2028", "c": True}
    assert canonical_json(obj) == encode_canonical_json(obj)


def test_seal_roundtrip_and_wrong_key() -> None:
    keys = CrossSigningKeys.generate()
    sealed = seal(keys, store_key="s" * 20)
    assert keys.master.hex() not in sealed
    assert unseal(sealed, store_key="s" * 20) == keys
    with pytest.raises(Exception, match="wrong bot.store_key"):
        unseal(sealed, store_key="t" * 20)


async def _query(bridge: Any) -> dict[str, Any]:
    bot = bridge.config.bot_user_id
    return await bridge.api.request("POST", "/_matrix/client/v3/keys/query", user_id=bot,
                                    json={"device_keys": {bot: []}})


def _check_identity(q: dict[str, Any], bot: str, device_id: str) -> str:
    master = q["master_keys"][bot]
    ssk = q["self_signing_keys"][bot]
    (master_pub,) = master["keys"].values()
    (ssk_pub,) = ssk["keys"].values()
    _verify(ssk, bot, master_pub, master_pub)  # self-signing key signed by the master key
    device = q["device_keys"][bot][device_id]
    _verify(device, bot, ssk_pub, ssk_pub)  # the device signed by the self-signing key
    return str(master_pub)


@pytest.mark.synapse
async def test_bot_identity_survives_restart_and_signs_a_new_device(bridge_factory: Any, data_dir: Path,
                                                                    homeserver: Any) -> None:
    bridge = await bridge_factory()
    bot = bridge.config.bot_user_id
    master = _check_identity(await _query(bridge), bot, bridge.bot.device_id)
    first_device = bridge.bot.device_id
    await bridge.stop()

    again = await bridge_factory()
    assert again.bot.device_id == first_device
    assert _check_identity(await _query(again), bot, first_device) == master
    await again.stop()

    shutil.rmtree(data_dir / "nio")  # the crypto store is lost; the bridge's database is not
    fresh = await bridge_factory()
    assert fresh.bot.device_id != first_device
    assert _check_identity(await _query(fresh), bot, fresh.bot.device_id) == master
    await fresh.stop()

    cfg = config_file(homeserver, data_dir)
    cli = [sys.executable, "-m", "bridge", "-c", str(cfg), "bot"]
    out = subprocess.run([*cli, "identity"], capture_output=True, text=True, check=True).stdout
    assert " ".join(master[i:i + 4] for i in range(0, len(master), 4)) in out
    refused = subprocess.run([*cli, "reset-identity"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert refused.returncode == 2  # no confirmation, nothing changed
    subprocess.run([*cli, "reset-identity", "--yes"], capture_output=True, text=True, check=True)
    reset = await bridge_factory()
    new_master = _check_identity(await _query(reset), bot, reset.bot.device_id)
    assert new_master != master


@pytest.mark.synapse
async def test_a_restored_older_backup_is_explained_and_reset_identity_recovers(bridge_factory: Any, data_dir: Path,
                                                                                homeserver: Any) -> None:
    """The bridge's data restored from a backup older than its current identity: the homeserver
    refuses the old keys (Synapse answers 500). `run` says what happened and what to do, and
    `bot reset-identity --yes` recovers (it used to fail with the same 500)."""
    from bridge.errors import BridgeError

    first = await bridge_factory()
    await first.stop()
    backup = data_dir.parent / "backup"
    shutil.copytree(data_dir, backup)
    newer = await bridge_factory()
    await newer.bot.ensure_cross_signing(reset=True)  # a newer identity, uploaded
    await newer.stop()
    shutil.rmtree(data_dir)
    shutil.copytree(backup, data_dir)  # the old backup restored
    with pytest.raises(BridgeError, match="reset-identity"):
        await bridge_factory()
    cfg = config_file(homeserver, data_dir)
    reset = subprocess.run([sys.executable, "-m", "bridge", "-c", str(cfg), "bot", "reset-identity", "--yes"],
                           capture_output=True, text=True)
    assert reset.returncode == 0, reset.stderr[-500:]
    recovered = await bridge_factory()
    _check_identity(await _query(recovered), recovered.config.bot_user_id, recovered.bot.device_id)
