"""Hetzner Cloud, through the `hcloud` SDK.

Two things the SDK does by itself shape this module:
- It retries a POST after a timeout. A retried create must never make a
  second server, so every server gets a unique name before the call, and a
  name that exists already (`uniqueness_error`) is reported as EXISTS: the
  autoscaler adopts that server.
- It retries a 429 on its own schedule. Hetzner says when the limit resets
  (`RateLimit-Reset`), so a response hook turns a 429 into RATE_LIMITED with
  that time before the SDK can retry, and no call is made while the budget
  of calls is known to be spent.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import requests
from hcloud import APIException, Client
from hcloud.firewalls import Firewall
from hcloud.images import Image
from hcloud.locations import Location
from hcloud.networks import Network
from hcloud.server_types import ServerType as HServerType
from hcloud.servers import BoundServer
from hcloud.servers import Server as HServer
from hcloud.ssh_keys import SSHKey

from rgrid_infra.cloudinit import WorkerBoot, render_worker
from rgrid_infra.provider import (
    ActionResult,
    BootContext,
    Created,
    CreateRequest,
    ProviderError,
    Server,
    ServerType,
)

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://api.hetzner.cloud/v1"
# Short, so that the autoscaler's cycle never hangs on one call; the SDK
# retries timeouts itself (see the module docstring).
TIMEOUT_S = (5.0, 30.0)

_KINDS = {
    "resource_unavailable": ProviderError.UNAVAILABLE,
    "placement_error": ProviderError.UNAVAILABLE,
    "resource_limit_exceeded": ProviderError.LIMIT,
    "unauthorized": ProviderError.AUTH,
    "forbidden": ProviderError.AUTH,
    "token_readonly": ProviderError.AUTH,
    "uniqueness_error": ProviderError.EXISTS,
    "rate_limit_exceeded": ProviderError.RATE_LIMITED,
    "not_found": ProviderError.GONE,
}


@dataclass(frozen=True)
class HetznerConfig:
    token: str
    endpoint: str = DEFAULT_ENDPOINT
    server_types: tuple[str, ...] = ("cx23", "cx33", "cx43")
    locations: tuple[str, ...] = ("fsn1", "nbg1")
    image: str = "debian-12"
    network: str | None = None
    firewall: str | None = None
    ssh_keys: tuple[str, ...] = ()
    # What the cloud-init installs: Python versions offered to jobs, and
    # where the rgrid wheel of exactly the server's version comes from.
    runtimes: tuple[str, ...] = ("3.11", "3.12")
    package: str = "rgrid"
    find_links: str | None = None


class _RateLimit:
    """Hetzner's call budget, as its last answer told it."""

    def __init__(self) -> None:
        self.remaining: int | None = None
        self.reset_at = 0.0
        self._lock = threading.Lock()

    def hook(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        headers = response.headers
        with self._lock:
            if "RateLimit-Remaining" in headers:
                self.remaining = int(headers["RateLimit-Remaining"])
            if "RateLimit-Reset" in headers:
                self.reset_at = float(headers["RateLimit-Reset"])
        if response.status_code == 429:
            raise ProviderError(
                ProviderError.RATE_LIMITED, "Hetzner: too many requests (429)", retry_at=self.reset_at
            )

    def check(self) -> None:
        with self._lock:
            spent = self.remaining == 0 and time.time() < self.reset_at
        if spent:
            raise ProviderError(ProviderError.RATE_LIMITED, "Hetzner: call budget spent", self.reset_at)


class HetznerProvider:
    name = "hetzner"
    billing_period_s: float | None = 3600.0

    def __init__(self, config: HetznerConfig) -> None:
        self.config = config
        self.client = Client(
            token=config.token, api_endpoint=config.endpoint, application_name="rgrid", timeout=TIMEOUT_S
        )
        self.rate = _RateLimit()
        # The SDK keeps one requests session per base client: that is where
        # a response hook sees every answer (pinned hcloud version).
        self.client._client._session.hooks["response"].append(self.rate.hook)
        self._refs: dict[str, Any] = {}
        self._private_cidr: str | None = None  # the network's range, once looked up

    # -- the interface --------------------------------------------------------
    def server_types(self) -> list[ServerType]:
        found = self._call(self.client.server_types.get_all)
        allowed = set(self.config.server_types)
        out = []
        for stype in found:
            if stype.name not in allowed:
                continue
            available = {
                loc.location.name
                for loc in stype.locations or []
                if loc.available and loc.deprecation is None
            }
            prices = {
                p["location"]: float(p["price_hourly"]["gross"])
                for p in stype.prices or []
                if p["location"] in self.config.locations and p["location"] in available
            }
            out.append(
                ServerType(stype.name, float(stype.cores or 0), int((stype.memory or 0) * 1024), prices)
            )
        return out

    def list_servers(self, labels: Mapping[str, str]) -> list[Server]:
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        return [_server(s) for s in self._call(self.client.servers.get_all, label_selector=selector)]

    def create(self, request: CreateRequest) -> Created:
        extra = self._references()
        response = self._call(
            self.client.servers.create,
            name=request.name,
            server_type=HServerType(name=request.server_type),
            image=Image(name=self.config.image),
            location=Location(name=request.location),
            labels=dict(request.labels),
            user_data=request.user_data,
            **extra,
        )
        action = response.action
        return Created(_server(response.server), str(action.id) if action else None)

    def action_result(self, action_id: str) -> ActionResult:
        action = self._call(self.client.actions.get_by_id, int(action_id))
        if action.status == "running":
            return ActionResult(done=False)
        if action.status != "error":
            return ActionResult(done=True)
        error = action.error or {}
        return ActionResult(
            True, f"{error.get('code', 'error')}: {error.get('message', 'the action failed')}"
        )

    def delete(self, server_id: str) -> None:
        try:
            self._call(self.client.servers.delete, HServer(id=int(server_id)))
        except ProviderError as exc:
            if exc.kind != ProviderError.GONE:
                raise

    def render_user_data(self, boot: BootContext) -> str:
        """Ray's ports open to the private network's range only (the
        network's own range when one is configured)."""
        self._references()
        private = self._private_cidr or "10.0.0.0/8"
        return render_worker(
            WorkerBoot(
                boot=boot,
                runtimes=self.config.runtimes,
                package=self.config.package,
                find_links=self.config.find_links,
                provider=self.name,
                private_cidr=private,
            )
        )

    # -- plumbing -------------------------------------------------------------
    def _references(self) -> dict[str, Any]:
        """Network, firewall and SSH keys by name, looked up once."""
        if not self._refs:
            refs: dict[str, Any] = {}
            if self.config.network:
                network = self._find(self.client.networks, self.config.network)
                refs["networks"] = [Network(id=network.id)]
                self._private_cidr = network.ip_range
            if self.config.firewall:
                refs["firewalls"] = [Firewall(id=self._lookup(self.client.firewalls, self.config.firewall))]
            if self.config.ssh_keys:
                refs["ssh_keys"] = [
                    SSHKey(id=self._lookup(self.client.ssh_keys, k)) for k in self.config.ssh_keys
                ]
            self._refs = refs
        return self._refs

    def _lookup(self, resource: Any, name: str) -> int:
        return int(self._find(resource, name).id)

    def _find(self, resource: Any, name: str) -> Any:
        found = self._call(resource.get_by_name, name)
        if found is None:
            raise ProviderError(
                ProviderError.OTHER, f"Hetzner has no {resource._base_url[1:-1]} named {name!r}"
            )
        return found

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        self.rate.check()
        try:
            return fn(*args, **kwargs)
        except APIException as exc:
            kind = _KINDS.get(str(exc.code), ProviderError.OTHER)
            if isinstance(exc.code, int) and exc.code in (401, 403):
                kind = ProviderError.AUTH
            raise ProviderError(
                kind, f"Hetzner: {exc.message} ({exc.code})", self.rate.reset_at or None
            ) from None
        except requests.RequestException as exc:
            raise ProviderError(
                ProviderError.OTHER, f"Hetzner unreachable: {exc.__class__.__name__}"
            ) from None


def _server(s: BoundServer) -> Server:
    private = s.private_net[0].ip if s.private_net else None
    return Server(
        id=str(s.id),
        name=s.name or "",
        server_type=(s.server_type.name if s.server_type else None) or "",
        location=(s.location.name if s.location else None) or "",
        labels=dict(s.labels or {}),
        status=s.status or "unknown",
        created_at=s.created or datetime.now(UTC),
        private_ip=private,
    )
