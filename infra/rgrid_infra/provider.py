"""The one small interface every machine provider speaks (Hetzner Cloud, the
local machine): list the cluster's servers by label, create one, delete one,
and say which server types exist, where, and at what hourly price.

The autoscaler (in the API server) only ever talks to this interface, so a
provider is the only code that knows a cloud. Prices and availability are
read from the provider, never written down here: they change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

CLUSTER_LABEL = "rgrid-cluster"
# Every server rgrid creates carries these labels; the list call selects on
# the first, and the second lets a human tell rgrid's servers apart.
ROLE_LABEL = "rgrid-role"
WORKER_ROLE = "worker"


@dataclass(frozen=True)
class ServerType:
    """A kind of server: its size, and its € per hour in each location where
    it can be ordered now."""

    name: str
    cpus: float
    memory_mb: int
    prices: Mapping[str, float] = field(default_factory=dict)

    def price_in(self, location: str) -> float | None:
        return self.prices.get(location)


@dataclass(frozen=True)
class Server:
    """A server as the provider sees it."""

    id: str
    name: str
    server_type: str
    location: str
    labels: Mapping[str, str]
    status: str
    created_at: datetime
    private_ip: str | None = None


@dataclass(frozen=True)
class Created:
    """What a create call returned: the server, and the provider's action id
    for its creation (None when creation is synchronous)."""

    server: Server
    action_id: str | None = None


@dataclass(frozen=True)
class ActionResult:
    """A provider's action: still running, or done (with its error if it failed)."""

    done: bool
    error: str | None = None


@dataclass(frozen=True)
class CreateRequest:
    name: str
    server_type: str
    location: str
    labels: Mapping[str, str]
    user_data: str


@dataclass(frozen=True)
class BootContext:
    """What a new server needs to join the grid. The only secret is the
    bootstrap token: single-use and short-lived, because user data is
    readable by any process on the server."""

    worker_id: str
    api_url: str
    bootstrap_token: str
    version: str
    cpus: float
    memory_mb: int


class ProviderError(Exception):
    """A provider call failed; `kind` says how the autoscaler should react."""

    # Kinds: the (type, location) has no capacity now; the project's quota
    # is used up; the credentials are refused; too many calls (retry at
    # `retry_at`, epoch seconds); the name exists already; no such thing;
    # anything else.
    UNAVAILABLE = "unavailable"
    LIMIT = "limit"
    AUTH = "auth"
    RATE_LIMITED = "rate_limited"
    EXISTS = "exists"
    GONE = "gone"
    OTHER = "other"

    def __init__(self, kind: str, message: str, retry_at: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_at = retry_at


class Provider(Protocol):
    """Machines for the grid. Every method may raise ProviderError."""

    name: str
    # Seconds per billing unit (Hetzner bills started hours); None when
    # time costs nothing, so idle nodes may go at once.
    billing_period_s: float | None

    def server_types(self) -> list[ServerType]:
        """The allowed server types, with prices for the allowed locations."""

    def list_servers(self, labels: Mapping[str, str]) -> list[Server]:
        """Every server carrying all these labels (one call, all pages)."""

    def create(self, request: CreateRequest) -> Created:
        """Create a server. A name that exists already raises EXISTS: the
        caller adopts that server instead of making a second one."""

    def action_result(self, action_id: str) -> ActionResult:
        """Where a creation action stands."""

    def delete(self, server_id: str) -> None:
        """Delete a server; one that is already gone counts as deleted."""

    def render_user_data(self, boot: BootContext) -> str:
        """The user data that makes a new server join the grid as a worker."""
