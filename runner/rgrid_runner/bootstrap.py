"""A node's own credential, bound to its worker id, got at first contact
and kept in a file only root reads, so a restarted agent keeps its id.

Two ways to get one:
- a provisioned node's user data holds only a single-use bootstrap token,
  which buys the credential and the grid's Ray token (`by_bootstrap`);
- a node an operator set up (compose, systemd) holds the shared worker
  token, which buys a credential for an id no live node holds, and nothing
  else (`by_join`). Its kept credential is checked at start: one the API no
  longer knows (its database was reset, the id was joined again) is
  dropped and the node joins again.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import httpx

from rgrid.config import read_json, write_private, write_private_text
from rgrid.errors import RgridError
from rgrid.http import api_detail
from rgrid.wire import WorkerGrant, WorkerJoin

log = logging.getLogger(__name__)

# The control plane may still be coming up when a node boots.
EXCHANGE_DEADLINE_S = 600.0
CALL_TIMEOUT_S = 10.0


def by_bootstrap(
    api_url: str, bootstrap_token: str, credential_file: Path, ray_token_path: Path | None
) -> WorkerGrant:
    """The node's credential: from its file, or by spending the bootstrap token."""
    kept = read_json(credential_file)
    if kept:
        return WorkerGrant.model_validate(kept)
    grant = _ask(
        api_url,
        "/v1/workers/bootstrap",
        bootstrap_token,
        None,
        "the API refused this node's bootstrap token (used, expired or revoked): "
        "the autoscaler will replace this server",
    )
    write_private(credential_file, grant.model_dump(exclude={"ray_token"}))
    if grant.ray_token and ray_token_path is not None:
        write_private_text(ray_token_path, grant.ray_token)
    log.info("exchanged the bootstrap token: this node is worker %s", grant.worker_id)
    return grant


def by_join(api_url: str, worker_token: str, worker_id: str, credential_file: Path) -> WorkerGrant:
    """The node's credential: its kept one while the API accepts it, or a
    new one for `worker_id` bought with the worker token and kept in
    `credential_file` (the API gives an id one working credential, so a node
    that lost its file needs `rgrid server forget-node` to join again)."""
    kept = read_json(credential_file)
    if kept:
        grant = WorkerGrant.model_validate(kept)
        if _accepted(api_url, grant):
            return grant
        log.warning("the API no longer knows worker %s's credential: joining again", grant.worker_id)
    grant = _ask(
        api_url,
        "/v1/workers/join",
        worker_token,
        WorkerJoin(id=worker_id),
        "the API refused this node's worker token (RGRID_WORKER_TOKEN)",
    )
    write_private(credential_file, grant.model_dump(exclude={"ray_token"}))
    log.info("joined the grid as worker %s", grant.worker_id)
    return grant


def _accepted(api_url: str, grant: WorkerGrant) -> bool:
    """Whether the API takes the credential (any answer but 401 says yes:
    an API that is away is no reason to drop it)."""
    url = f"{api_url.rstrip('/')}/v1/workers/{grant.worker_id}/running"
    deadline = time.monotonic() + EXCHANGE_DEADLINE_S
    while True:
        try:
            resp = httpx.get(
                url, headers={"Authorization": f"Bearer {grant.credential}"}, timeout=CALL_TIMEOUT_S
            )
        except httpx.HTTPError as exc:
            if time.monotonic() > deadline:
                raise RgridError(f"cannot reach the API at {api_url}: {exc}") from None
            log.warning("cannot reach the API (%s); retrying", exc)
            time.sleep(2.0)
            continue
        return resp.status_code != 401


def _ask(api_url: str, path: str, token: str, body: WorkerJoin | None, refused: str) -> WorkerGrant:
    """POST until the API answers (it may still be starting); 401 is
    `refused`, 409 the API's own word on why not."""
    url = api_url.rstrip("/") + path
    payload = body.model_dump() if body is not None else None
    deadline = time.monotonic() + EXCHANGE_DEADLINE_S
    pause = 1.0
    while True:
        try:
            resp = httpx.post(
                url, headers={"Authorization": f"Bearer {token}"}, json=payload, timeout=CALL_TIMEOUT_S
            )
            if resp.status_code == 401:
                raise RgridError(refused)
            if resp.status_code == 409:
                raise RgridError(f"the API would not give this node a credential: {api_detail(resp)}")
            resp.raise_for_status()
            return WorkerGrant.model_validate_json(resp.content)
        except (httpx.HTTPError, ValueError) as exc:
            if time.monotonic() > deadline:
                raise RgridError(
                    f"cannot reach the API at {api_url} for this node's credential: {exc}"
                ) from None
            log.warning(
                "asking the API for this node's credential failed (%s); retrying in %.0f s", exc, pause
            )
            time.sleep(pause)
            pause = min(pause * 2, 30.0)
