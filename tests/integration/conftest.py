"""Test hosts for the job network: a "public" server (a slice of a
documentation range this machine does not use: 203.0.113.0/24 is taken, the
package registries' proxy answers at 203.0.113.80), a "private" one in a
denied RFC 1918 range, and a link-local one standing in for the cloud
metadata service."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

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
