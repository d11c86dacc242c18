"""Test hosts on this machine: each an HTTP server in a network namespace of
its own, joined to the machine by a veth pair. Their addresses live only in
those namespaces and the machine's routing table, so traffic to them never
leaves the machine. Host-side interfaces are named rgt*, never rgj* (the job
network's own)."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rgrid.local.procs import spawn, stop_session

PORT = 8080


@dataclass(frozen=True)
class NetHost:
    name: str
    address: str
    port: int
    body: str
    # The folder the host serves: a test may put files there.
    served: Path

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}/index.html"


def _ip(*args: str, stdin: str | None = None) -> None:
    subprocess.run(["ip", *args], input=stdin, text=True, check=True, capture_output=True, timeout=30)


def _reachable(host: NetHost) -> bool:
    code = f"import urllib.request; urllib.request.urlopen({host.url!r}, timeout=1).read()"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30).returncode == 0


def _refuse_if_used(cidr: str) -> None:
    """A test range must be one this machine neither has on an interface nor
    routes anywhere but by its default route: otherwise the test would take
    over real traffic."""
    network = ipaddress.ip_network(cidr, strict=False)
    routes = subprocess.run(["ip", "-4", "route", "show"], capture_output=True, text=True, check=True).stdout
    for line in routes.splitlines():
        dest = line.split()[0]
        if dest != "default" and ipaddress.ip_network(dest, strict=False).overlaps(network):
            raise RuntimeError(f"test range {network} overlaps this machine's route: {line}")


@contextmanager
def net_host(root: Path, name: str, host_side: str, address: str, prefix: int) -> Iterator[NetHost]:
    """An HTTP server at `address` in namespace rgt-<name>, the machine at
    `host_side` on the same link."""
    netns, link = f"rgt-{name}", f"rgt{name}"[:15]
    _refuse_if_used(f"{host_side}/{prefix}")
    served = root / name
    served.mkdir(parents=True, exist_ok=True)
    host = NetHost(name, address, PORT, f"hello from {name}", served)
    (served / "index.html").write_text(host.body)
    subprocess.run(["ip", "netns", "del", netns], capture_output=True)
    _ip("netns", "add", netns)
    pid = None
    try:
        _ip("link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _ip("addr", "add", f"{host_side}/{prefix}", "dev", link)
        _ip("link", "set", link, "up")
        inside = f"addr add {address}/{prefix} dev eth0\nlink set eth0 up\nlink set lo up\n"
        _ip("-n", netns, "-batch", "-", stdin=inside + f"route add default via {host_side}\n")
        argv = [
            "ip",
            "netns",
            "exec",
            netns,
            sys.executable,
            "-m",
            "http.server",
            "--bind",
            address,
            str(PORT),
        ]
        pid = spawn(argv, {"PATH": "/usr/bin:/bin"}, root / f"{name}.log", served).pid
        deadline = time.monotonic() + 30
        while not _reachable(host):
            if time.monotonic() > deadline:
                raise RuntimeError(f"test host {name} did not come up")
            time.sleep(0.1)
        yield host
    finally:
        if pid is not None:
            stop_session(pid, grace_s=5)
        subprocess.run(["ip", "netns", "del", netns], capture_output=True)
