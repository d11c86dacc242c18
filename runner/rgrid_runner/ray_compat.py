"""Every use of Ray's private internals, in one place.

Ray has no public API for what a node agent needs without becoming a driver
(which would tie the agent's life to the head): list the nodes from the GCS,
ask the GCS to drain a node, and keep a loopback node address when joining.
These internals may change with any Ray release, so pyproject.toml pins Ray
to the minor version they were checked against, and
tests/runner/test_ray_compat.py fails loudly if one disappears.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import Any

# The Ray versions these internals were checked against (pyproject.toml pins the same).
CHECKED_RAY = "2.60"


def gcs_client(address: str) -> Any:
    """A client of the GCS at host:port (ray._raylet.GcsClient)."""
    return import_module("ray._raylet").GcsClient(address=address)


@dataclass(frozen=True)
class RayNode:
    node_id: str  # hex
    ip: str  # the address other nodes reach it at


# The label Ray gives every node: its id (hex). A task's label selector
# `{NODE_ID_LABEL: "!in(a,b)"}` keeps it off those nodes.
NODE_ID_LABEL = "ray.io/node-id"


def _alive_state() -> int:
    return int(import_module("ray.core.generated.gcs_pb2").GcsNodeInfo.GcsNodeState.Value("ALIVE"))


def alive_nodes(address: str, with_resource: str) -> list[RayNode]:
    """The alive nodes that advertise `with_resource`."""
    alive = _alive_state()
    nodes = gcs_client(address).get_all_node_info().items()
    return [
        RayNode(node_id.hex(), info.node_manager_address)
        for node_id, info in nodes
        if with_resource in info.resources_total and info.state == alive
    ]


def job_nodes(address: str, resource_prefix: str) -> list[tuple[float, float]]:
    """(CPUs, memory in bytes) of each alive, not draining node that runs
    jobs (it advertises a resource named with `resource_prefix`)."""
    draining = int(import_module("ray.core.generated.gcs_pb2").NodeSnapshot.State.Value("DRAINING"))
    alive = _alive_state()
    nodes = [
        info.resources_total
        for info in gcs_client(address).get_all_node_info().values()
        if info.state == alive
        and info.state_snapshot.state != draining
        and any(name.startswith(resource_prefix) for name in info.resources_total)
    ]
    return [(float(n.get("CPU", 0.0)), float(n.get("memory", 0.0))) for n in nodes]


def node_carries(address: str, node_id: str, resource: str) -> bool:
    """Whether the node (hex id) is alive and advertises `resource`: a node
    started for worker W carries `rgrid_worker_W`, so an id another node
    claims is told apart."""
    alive = _alive_state()
    return any(
        nid.hex() == node_id and info.state == alive and resource in info.resources_total
        for nid, info in gcs_client(address).get_all_node_info().items()
    )


def reload_ray_token() -> None:
    """Have this process's Ray clients read the token again (Ray caches it
    on first use): the grid's token was rotated."""
    import_module("ray._raylet").AuthenticationTokenLoader.instance().reset_cache()


def node_alive(address: str, node_id: str) -> bool:
    """Whether the GCS still counts the node (hex id) alive."""
    alive = _alive_state()
    return any(
        nid.hex() == node_id and info.state == alive
        for nid, info in gcs_client(address).get_all_node_info().items()
    )


def drain_node(address: str, node_id: str, message: str, timeout_s: float) -> tuple[bool, str]:
    """Ask the GCS to place nothing more on a node (preemption drain, no
    deadline); returns (accepted, why not).

    The GCS answers only once the node's raylet has: a frozen raylet (a hung
    or partitioned machine) never does, and Ray's own RPC deadline is
    unlimited, so the caller bounds the wait; a timeout raises."""
    reason = import_module("ray.core.generated.autoscaler_pb2").DrainNodeReason.Value(
        "DRAIN_NODE_REASON_PREEMPTION"
    )
    accepted, why = gcs_client(address).drain_node(node_id, reason, message, 0, timeout=timeout_s)
    return bool(accepted), str(why)


def keep_loopback_node_address() -> None:
    """Make `ray start` keep 127.0.0.1 as the node address. Joining a cluster
    otherwise replaces it with the machine's outward address, and the
    embedded grid must stay on loopback. Other addresses are untouched."""
    services: Any = import_module("ray._private.services")
    original: Callable[[str], str] = services.resolve_ip_for_localhost
    services.resolve_ip_for_localhost = lambda host: host if host == "127.0.0.1" else original(host)
