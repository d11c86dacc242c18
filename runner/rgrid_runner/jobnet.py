"""The job network: a job reaches public addresses and nothing of the grid.

Every job with network runs in a network namespace of its own, joined to its
node by a veth pair (host side `rgj<slot>`, a /30 from RGRID_JOB_SUBNET). All
its traffic leaves through the node, where one nftables table
(`inet rgrid_jobs`, installed by the node agent) decides in the kernel:

- to the node itself (any of its addresses, any port): refused;
- to RGRID_JOB_ALLOW_CIDRS: allowed (an operator's own database, say);
- to the node's DNS resolvers, port 53 only: allowed;
- to RGRID_JOB_DENY_CIDRS (loopback, link-local with the metadata service,
  RFC 1918, CGNAT, multicast, ...): refused;
- anywhere else: allowed, masqueraded behind the node's address;
- nothing starts a connection into a job, from another job or elsewhere.

The namespace has its own loopback, so 127.0.0.1 is the job's own, and
abstract unix sockets are per namespace too. Jobs get no IPv6. The Docker
sandbox's network is a bridge named `rgj-docker`, matched by the same rules.
See docs/architecture.md for why this mechanism.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import random
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rgrid_runner.settings import RunnerSettings
from rgrid_runner.systools import PRIVILEGED_ENV, system_tool

log = logging.getLogger(__name__)

TABLE = "rgrid_jobs"
HOST_IF_PREFIX = "rgj"
DOCKER_BRIDGE = "rgj-docker"
DOCKER_NETWORK = "rgrid-jobs"
NETNS_DIR = Path("/run/netns")
NETNS_PREFIX = "rgrid."
NETNS_SLOT_TRIES = 64
# A job namespace with no process in it for this long was left by a runner
# that died (node crash, SIGKILL): its `finally` never ran.
ABANDONED_AFTER_S = 60.0

DEFAULT_DENY = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
)


class JobNetError(RuntimeError):
    """The job network could not be set up (not root, no nft, no netns)."""


def _cidrs(text: str) -> list[ipaddress.IPv4Network]:
    nets = []
    for item in text.split(","):
        if item.strip():
            net = ipaddress.ip_network(item.strip(), strict=False)
            if not isinstance(net, ipaddress.IPv4Network):
                raise ValueError(f"{item.strip()}: jobs have IPv4 only; give IPv4 ranges")
            nets.append(net)
    return nets


def resolvers(resolv_conf: Path = Path("/etc/resolv.conf")) -> list[str]:
    """The node's IPv4 DNS resolvers that a job can reach through the node:
    loopback ones (a local stub such as systemd-resolved) are replaced by
    that stub's upstreams where known."""
    found = _nameservers(resolv_conf)
    if any(ipaddress.ip_address(a).is_loopback for a in found):
        found = [a for a in found if not ipaddress.ip_address(a).is_loopback]
        found += _nameservers(Path("/run/systemd/resolve/resolv.conf"))
    return list(dict.fromkeys(a for a in found if not ipaddress.ip_address(a).is_loopback))


def _nameservers(path: Path) -> list[str]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            with contextlib.suppress(ValueError):
                if ipaddress.ip_address(parts[1]).version == 4:
                    found.append(parts[1])
    return found


@dataclass(frozen=True)
class JobNetPolicy:
    """What jobs may reach, from the worker's settings."""

    subnet: ipaddress.IPv4Network
    deny: list[ipaddress.IPv4Network]
    allow: list[ipaddress.IPv4Network]
    dns: list[str]

    @classmethod
    def from_settings(cls, subnet: str, deny: str | None, allow: str, dns: str | None) -> JobNetPolicy:
        net = ipaddress.ip_network(subnet, strict=False)
        if not isinstance(net, ipaddress.IPv4Network) or net.prefixlen > 28:
            raise ValueError(f"RGRID_JOB_SUBNET {subnet}: give an IPv4 range of /28 or larger")
        return cls(
            subnet=net,
            deny=_cidrs(",".join(DEFAULT_DENY) if deny is None else deny),
            allow=_cidrs(allow),
            dns=[a.strip() for a in dns.split(",") if a.strip()] if dns is not None else resolvers(),
        )

    def ruleset(self) -> str:
        """The whole `inet rgrid_jobs` table, replaced atomically by `nft -f`."""
        jobs = f'iifname "{HOST_IF_PREFIX}*"'
        reject = "reject with icmpx type admin-prohibited"
        lines = [
            f"table inet {TABLE}",
            f"delete table inet {TABLE}",
            f"table inet {TABLE} {{",
            "  chain input {",
            "    type filter hook input priority -10; policy accept",
            f"    {jobs} {reject}",
            "  }",
            "  chain forward {",
            "    type filter hook forward priority -10; policy accept",
        ]
        for server in self.dns:
            lines += [
                f"    {jobs} ip daddr {server} udp dport 53 accept",
                f"    {jobs} ip daddr {server} tcp dport 53 accept",
            ]
        if self.allow:
            lines.append(f"    {jobs} ip daddr {{ {', '.join(map(str, self.allow))} }} accept")
        if self.deny:
            lines.append(f"    {jobs} ip daddr {{ {', '.join(map(str, self.deny))} }} {reject}")
        lines += [
            f"    {jobs} meta nfproto ipv6 drop",
            f'    oifname "{HOST_IF_PREFIX}*" ct state established,related accept',
            f'    oifname "{HOST_IF_PREFIX}*" drop',
            "  }",
            "  chain postrouting {",
            "    type nat hook postrouting priority 100; policy accept",
            f'    ip saddr {self.subnet} oifname != "{HOST_IF_PREFIX}*" masquerade',
            "  }",
            "}",
        ]
        return "\n".join(lines) + "\n"

    def resolv_conf(self) -> str:
        """/etc/resolv.conf as a job sees it: the resolvers it can reach."""
        return "".join(f"nameserver {server}\n" for server in self.dns)

    def slots(self) -> int:
        return self.subnet.num_addresses // 4

    def addresses(self, slot: int) -> tuple[str, str]:
        """(node side, job side) of a slot's /30."""
        base = int(self.subnet.network_address) + 4 * slot
        return str(ipaddress.IPv4Address(base + 1)), str(ipaddress.IPv4Address(base + 2))


def _run(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `ip` or `nft` (as root) by absolute path with a fixed environment."""
    command = [system_tool(argv[0]), *argv[1:]]
    return subprocess.run(
        command, input=stdin, capture_output=True, text=True, timeout=30, env=PRIVILEGED_ENV
    )


def _check(result: subprocess.CompletedProcess[str], what: str) -> None:
    if result.returncode != 0:
        raise JobNetError(f"{what} failed: {(result.stderr or result.stdout).strip()[:300]}")


def abandoned_namespaces(older_than_s: float = ABANDONED_AFTER_S) -> list[str]:
    """Job namespaces of any worker on this machine (a restarted agent has a
    new worker id) with no process inside and older than `older_than_s`: a
    live attempt's namespace holds its job, and a new one is young."""
    now = time.time()
    found = []
    for line in _run(["ip", "netns", "list"]).stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        if not name.startswith(NETNS_PREFIX):
            continue
        try:
            age = now - (NETNS_DIR / name).stat().st_mtime
        except FileNotFoundError:
            continue
        if age > older_than_s and not _run(["ip", "netns", "pids", name]).stdout.strip():
            found.append(name)
    return found


class JobNetwork:
    """Installs the policy on a node and gives each attempt its namespace."""

    def __init__(self, policy: JobNetPolicy, owner: str, state_dir: Path) -> None:
        self.policy = policy
        # Named after the worker, so an operator sees whose job it is.
        self.prefix = f"{NETNS_PREFIX}{owner}."
        self.resolv_path = state_dir / "job-resolv.conf"

    def install(self) -> None:
        """Once per node, as root: forwarding on, the rules in place, the
        jobs' resolv.conf written, and namespaces that crashed runners left
        behind removed (with their veth pairs). Idempotent."""
        try:
            Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
        except OSError as exc:
            raise JobNetError(f"cannot enable IPv4 forwarding: {exc}") from exc
        _check(_run(["nft", "-f", "-"], stdin=self.policy.ruleset()), "installing the job network rules")
        self.resolv_path.parent.mkdir(parents=True, exist_ok=True)
        self.resolv_path.write_text(self.policy.resolv_conf())
        self.resolv_path.chmod(0o644)
        for name in abandoned_namespaces():
            log.info("removing job network namespace %s left by a runner that died", name)
            _run(["ip", "netns", "del", name])

    @contextlib.contextmanager
    def attach(self, name: str) -> Iterator[Path]:
        """A fresh namespace for one attempt, wired to the node; removed
        (with its veth) when the block ends. Yields its path for nsenter."""
        netns = f"{self.prefix}{name}"
        try:
            node_ip, job_ip = self._create(netns)
            log.debug("attempt %s on %s via %s", name, job_ip, node_ip)
            yield NETNS_DIR / netns
        finally:
            _run(["ip", "netns", "del", netns])

    def _create(self, netns: str) -> tuple[str, str]:
        """Make the namespace and claim a free slot for it (creating the
        slot's host interface is the atomic claim), then set both ends up.
        Two `ip` processes in all, each a batch: every one is a fork of a
        large Ray worker on the attempt's critical path."""
        slots = self.policy.slots()
        start = random.randrange(slots)
        for i in range(min(slots, NETNS_SLOT_TRIES)):
            slot = (start + i) % slots
            host_if = f"{HOST_IF_PREFIX}{slot}"
            node_ip, job_ip = self.policy.addresses(slot)
            outside = [] if (NETNS_DIR / netns).exists() else [f"netns add {netns}"]
            claim = len(outside) + 1  # the batch's line number of the claim
            outside += [
                f"link add {host_if} type veth peer name eth0 netns {netns}",
                f"addr add {node_ip}/30 dev {host_if}",
                f"link set {host_if} up",
            ]
            created = _run(["ip", "-batch", "-"], stdin="\n".join(outside) + "\n")
            if created.returncode != 0:
                if "exists" in created.stderr and re.search(rf"Command failed -:{claim}\b", created.stderr):
                    continue  # the slot's interface is another attempt's
                _check(created, f"creating {netns} on {host_if}")
            inside = (
                f"addr add {job_ip}/30 dev eth0\nlink set eth0 up\nlink set lo up\n"
                f"route add default via {node_ip}\n"
            )
            _check(_run(["ip", "-n", netns, "-batch", "-"], stdin=inside), f"configuring {netns}")
            return node_ip, job_ip
        raise JobNetError(f"no free job network slot in {self.policy.subnet}")

    def docker_network_command(self, docker: str, subnet: str) -> list[str]:
        """The Docker network the docker sandbox attaches jobs to: a bridge
        whose name the same rules match."""
        return [
            docker,
            "network",
            "create",
            "--driver=bridge",
            f"--subnet={subnet}",
            f"--opt=com.docker.network.bridge.name={DOCKER_BRIDGE}",
            "--opt=com.docker.network.bridge.enable_ip_masquerade=true",
            DOCKER_NETWORK,
        ]


def job_network(settings: RunnerSettings, owner: str | None = None) -> JobNetwork:
    policy = JobNetPolicy.from_settings(
        settings.job_subnet, settings.job_deny_cidrs, settings.job_allow_cidrs, settings.job_dns
    )
    return JobNetwork(policy, owner or settings.worker_id or "node", settings.work_dir())
