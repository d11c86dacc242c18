"""Every Ray internal rgrid relies on (rgrid_runner.ray_compat) still exists
in the installed Ray. Fails loudly on an upgrade that moved one: re-check
ray_compat, then move CHECKED_RAY and the pin in pyproject.toml together."""

from __future__ import annotations

import inspect
from importlib import import_module

import pytest
import ray

from rgrid_runner import ray_compat


def test_ray_is_the_checked_version() -> None:
    assert ray.__version__.startswith(ray_compat.CHECKED_RAY + "."), (
        f"Ray {ray.__version__} is installed; ray_compat was checked against {ray_compat.CHECKED_RAY}"
    )


def test_gcs_client_internals_exist() -> None:
    raylet = import_module("ray._raylet")
    assert hasattr(raylet, "GcsClient")
    inner = raylet.InnerGcsClient
    assert callable(inner.get_all_node_info)
    assert callable(inner.drain_node)
    # A drain waits on the node's raylet; rgrid bounds it with this.
    assert "timeout" in inspect.signature(inner.drain_node).parameters


def test_protobuf_enums_exist() -> None:
    gcs = import_module("ray.core.generated.gcs_pb2")
    assert gcs.GcsNodeInfo.GcsNodeState.Value("ALIVE") == 0
    # job_nodes leaves draining nodes out by their snapshot's state.
    assert gcs.NodeSnapshot.State.Value("DRAINING") > 0
    fields = {f.name for f in gcs.GcsNodeInfo.DESCRIPTOR.fields}
    assert {"state", "state_snapshot", "resources_total"} <= fields
    autoscaler = import_module("ray.core.generated.autoscaler_pb2")
    assert autoscaler.DrainNodeReason.Value("DRAIN_NODE_REASON_PREEMPTION") >= 0


def test_loopback_stays_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    services = import_module("ray._private.services")
    original = services.resolve_ip_for_localhost
    monkeypatch.setattr(services, "resolve_ip_for_localhost", original)
    ray_compat.keep_loopback_node_address()
    assert services.resolve_ip_for_localhost("127.0.0.1") == "127.0.0.1"
    assert services.resolve_ip_for_localhost("10.1.2.3") == original("10.1.2.3")


def test_a_rotated_token_is_read_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """A node agent asks the GCS with the grid's token; after a rotation
    it must use the new one, though Ray caches the first it read."""
    loader = import_module("ray._raylet").AuthenticationTokenLoader.instance()
    monkeypatch.setenv("RAY_AUTH_TOKEN", "a" * 64)
    ray_compat.reload_ray_token()
    assert loader.get_raw_token(ignore_auth_mode=True) == "a" * 64
    monkeypatch.setenv("RAY_AUTH_TOKEN", "b" * 64)
    assert loader.get_raw_token(ignore_auth_mode=True) == "a" * 64
    ray_compat.reload_ray_token()
    assert loader.get_raw_token(ignore_auth_mode=True) == "b" * 64
    monkeypatch.undo()
    ray_compat.reload_ray_token()
