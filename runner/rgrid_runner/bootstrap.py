"""A provisioned node's first contact: its user data holds only a
single-use bootstrap token, which the agent exchanges for the node's own
credential (bound to its worker id) and the grid's Ray token. Both are kept
in files only root reads, so a restarted agent needs no token again."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import httpx

from rgrid.config import read_json, write_private, write_private_text
from rgrid.errors import RgridError
from rgrid.wire import WorkerGrant

log = logging.getLogger(__name__)

# The control plane may still be coming up when a node boots.
EXCHANGE_DEADLINE_S = 600.0


def node_credential(
    api_url: str, bootstrap_token: str, credential_file: Path, ray_token_path: Path | None
) -> WorkerGrant:
    """The node's credential: from its file, or by spending the bootstrap token."""
    kept = read_json(credential_file)
    if kept:
        return WorkerGrant.model_validate(kept)
    grant = _exchange(api_url, bootstrap_token)
    write_private(credential_file, grant.model_dump(exclude={"ray_token"}))
    if grant.ray_token and ray_token_path is not None:
        write_private_text(ray_token_path, grant.ray_token)
    log.info("exchanged the bootstrap token: this node is worker %s", grant.worker_id)
    return grant


def _exchange(api_url: str, token: str) -> WorkerGrant:
    url = api_url.rstrip("/") + "/v1/workers/bootstrap"
    deadline = time.monotonic() + EXCHANGE_DEADLINE_S
    pause = 1.0
    while True:
        try:
            resp = httpx.post(url, headers={"Authorization": f"Bearer {token}"}, timeout=10.0)
            if resp.status_code == 401:
                raise RgridError(
                    "the API refused this node's bootstrap token (used, expired or revoked): "
                    "the autoscaler will replace this server"
                )
            resp.raise_for_status()
            return WorkerGrant.model_validate_json(resp.content)
        except (httpx.HTTPError, ValueError) as exc:
            if time.monotonic() > deadline:
                raise RgridError(
                    f"cannot reach the API at {api_url} to exchange the bootstrap token: {exc}"
                ) from None
            log.warning("bootstrap exchange failed (%s); retrying in %.0f s", exc, pause)
            time.sleep(pause)
            pause = min(pause * 2, 30.0)
