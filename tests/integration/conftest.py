"""Test hosts for the job network: a "public" server (a slice of a
documentation range this machine does not use: 203.0.113.0/24 is taken, the
package registries' proxy answers at 203.0.113.80), a "private" one in a
denied RFC 1918 range, and a link-local one standing in for the cloud
metadata service."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from rgrid.local.components import ray_temp_dir
from tests.conftest import run_cli
from tests.support.testhosts import NetHost, net_host


@pytest.fixture(scope="session")
def net_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, NetHost]]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces for test hosts need root (CI runs as root)")
    root = tmp_path_factory.mktemp("test-hosts")
    with ExitStack() as stack:
        yield {
            "public": stack.enter_context(net_host(root, "pub", "198.51.100.241", "198.51.100.250", 28)),
            "private": stack.enter_context(net_host(root, "priv", "10.99.77.241", "10.99.77.250", 28)),
            "metadata": stack.enter_context(net_host(root, "meta", "169.254.169.241", "169.254.169.254", 28)),
        }


@pytest.fixture
def local_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment of a user with a local grid of their own (stopped at the end)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RGRID_")}
    env["RGRID_HOME"] = str(tmp_path / "home")
    yield env
    run_cli(["local", "down"], tmp_path, env)
    shutil.rmtree(ray_temp_dir(Path(env["RGRID_HOME"])), ignore_errors=True)


@pytest.fixture
def listener() -> Iterator[int]:
    """A service of the node on all its addresses, as a grid daemon would be."""
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        yield s.getsockname()[1]
