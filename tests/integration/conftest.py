"""Test hosts for the job network: a "public" server (a documentation range
no interface of this machine uses), a "private" one in a denied RFC 1918
range, and a link-local one standing in for the cloud metadata service."""

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
            "public": stack.enter_context(net_host(root, "pub", "203.0.113.1", "203.0.113.10", 24)),
            "private": stack.enter_context(net_host(root, "priv", "10.99.77.1", "10.99.77.10", 24)),
            "metadata": stack.enter_context(net_host(root, "meta", "169.254.169.1", "169.254.169.254", 24)),
        }
