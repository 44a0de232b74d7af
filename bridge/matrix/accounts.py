"""Which account admin a deployment has: Synapse's admin API (with homeserver.admin_token), or
the Matrix Authentication Service's (identity.backend: mas, or auto when the homeserver says it
delegates its authentication)."""

from __future__ import annotations

from typing import Any

from bridge.config import Config
from bridge.errors import MatrixError
from bridge.matrix.appservice_api import AppserviceAPI


async def auth_issuer(homeserver_url: str) -> str | None:
    """The OAuth2 issuer the homeserver delegates to (MSC2965 auth metadata), or None."""
    api = AppserviceAPI(base_url=homeserver_url, as_token="")
    try:
        meta = await api.request("GET", "/_matrix/client/v1/auth_metadata", retries=1, timeout=10)
    except MatrixError:
        return None
    finally:
        await api.close()
    issuer = meta.get("issuer") if isinstance(meta, dict) else None
    return str(issuer).rstrip("/") if issuer else None


async def account_admin(config: Config) -> Any:
    """The AccountLookup + AccountAdmin of this deployment, or None when it has none; the
    caller closes it."""
    identity = config.identity
    backend = identity.backend
    mas_url = identity.mas_url
    if backend == "auto":
        issuer = await auth_issuer(config.homeserver.url)
        backend = "mas" if issuer and identity.mas_client_id and identity.mas_client_secret else "synapse"
        mas_url = mas_url or issuer
    if backend == "mas" and mas_url and identity.mas_client_id and identity.mas_client_secret:
        from bridge.matrix.mas_api import MasAdmin

        return MasAdmin(base_url=mas_url, server_name=config.homeserver.server_name,
                        client_id=identity.mas_client_id, client_secret=identity.mas_client_secret)
    if config.homeserver.admin_token:
        from bridge.matrix.admin_api import SynapseAdmin

        return SynapseAdmin(base_url=config.homeserver.url, token=config.homeserver.admin_token)
    return None
