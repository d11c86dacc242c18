"""The job network, attacked as a hostile job would: a job reaches public
addresses and nothing of the grid. Kernel-enforced (rgrid_runner.jobnet):
checked here on real namespaces, veth pairs and nftables rules, with test
hosts of our own (tests/support/testhosts.py) whose traffic never leaves
this machine."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from rgrid_runner.jobnet import HOST_IF_PREFIX, JobNetError, abandoned_namespaces, job_network
from rgrid_runner.settings import RunnerSettings
from tests.conftest import run_cli
from tests.support.services import ApiServer, RayHead
from tests.support.testhosts import NetHost

# The end-to-end tests need one database backend: nothing here touches it.
ONE_BACKEND = pytest.mark.parametrize("api", ["sqlite"], indirect=True)

# Tries every (host, port) it is given and GETs every URL; prints what happened.
PROBE = r"""
import json, socket, sys, urllib.request
targets = json.loads(sys.argv[1])
gateway = None
for line in open("/proc/net/route").read().splitlines()[1:]:
    f = line.split()
    if f[1] == "00000000":
        gateway = socket.inet_ntoa(bytes.fromhex(f[2])[::-1])
hosts = [h if h != "GATEWAY" else gateway for h in targets["hosts"]]
result = {"connects": {}, "urls": {}, "gateway": gateway}
for host in hosts:
    for port in targets["ports"]:
        try:
            socket.create_connection((host, port), timeout=3).close()
            result["connects"][f"{host}:{port}"] = "open"
        except OSError as exc:
            result["connects"][f"{host}:{port}"] = type(exc).__name__
for url in targets["urls"]:
    try:
        result["urls"][url] = urllib.request.urlopen(url, timeout=5).read().decode()
    except OSError as exc:
        result["urls"][url] = type(exc).__name__
for dashboard in targets.get("dashboards", []):
    body = json.dumps({"entrypoint": "touch " + targets["marker"]}).encode()
    request = urllib.request.Request(dashboard + "/api/jobs/", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        result["urls"][dashboard] = urllib.request.urlopen(request, timeout=5).status
    except OSError as exc:
        result["urls"][dashboard] = type(exc).__name__
print(json.dumps(result))
"""


def listening_ports() -> list[int]:
    """Every TCP port something listens on in this machine's namespace: the
    grid's (Ray's GCS, dashboard, raylets, the API, S3, PostgreSQL) and more."""
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return sorted(ports)


def node_address() -> str:
    """This machine's own outward address: the source of its default route
    (a UDP connect only routes, nothing is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("9.9.9.9", 9))
        return str(s.getsockname()[0])


def probe_in_namespace(netns: Path, targets: dict) -> dict:
    result = subprocess.run(
        ["nsenter", f"--net={netns}", "--", sys.executable, "-c", PROBE, json.dumps(targets)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_policy_in_the_kernel(net_hosts: dict[str, NetHost], listener: int) -> None:
    """The node's rules, on a namespace as the runner makes one: public yes;
    private range, metadata, the node's addresses and ports no."""
    network = job_network(RunnerSettings(), owner="test-policy")
    network.install()
    with network.attach("probe-1") as netns:
        found = probe_in_namespace(
            netns,
            {
                "hosts": ["127.0.0.1", node_address(), "GATEWAY", "10.99.77.250", "169.254.169.254"],
                "ports": [listener, 8080],
                "urls": [h.url for h in net_hosts.values()],
            },
        )
    assert found["urls"][net_hosts["public"].url] == net_hosts["public"].body
    assert found["urls"][net_hosts["private"].url] != net_hosts["private"].body
    assert found["urls"][net_hosts["metadata"].url] != net_hosts["metadata"].body
    assert "open" not in found["connects"].values(), found["connects"]
    assert found["gateway"] is not None
    assert not any(line.startswith("rgrid.test-policy.") for line in _namespaces())


def test_an_operator_may_allow_a_range(net_hosts: dict[str, NetHost]) -> None:
    private = net_hosts["private"]
    allowing = job_network(RunnerSettings(job_allow_cidrs="10.99.77.240/28"), owner="test-allow")
    try:
        allowing.install()
        with allowing.attach("probe-2") as netns:
            found = probe_in_namespace(netns, {"hosts": [], "ports": [], "urls": [private.url]})
        assert found["urls"][private.url] == private.body
    finally:
        # Back to the rules every node agent of this test session installed.
        job_network(RunnerSettings(), owner="test-allow").install()


def _namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return out.splitlines()


@ONE_BACKEND
def test_a_hostile_job_cannot_take_over_the_grid(
    tmp_path: Path,
    rgrid_env: dict[str, str],
    net_hosts: dict[str, NetHost],
    api: ApiServer,
    ray_head: RayHead,
    listener: int,
) -> None:
    """The attack from issue 8, through `rgrid run` on the real grid: the job
    tries every listening port of the node on loopback, the node's address and
    its gateway, submits a Ray job through the dashboard, and goes for the
    private range and the metadata service. All of it fails; the public host
    answers; nothing ran outside the sandbox."""
    marker = Path("/tmp") / f"rgrid-pwned-{uuid.uuid4().hex}"
    dashboard_port = int(ray_head.dashboard.rsplit(":", 1)[1])
    ports = listening_ports()
    assert dashboard_port in ports and int(api.url.rsplit(":", 1)[1]) in ports
    dashboards = [f"http://{host}:{dashboard_port}" for host in ("127.0.0.1", node_address())]
    targets = {
        "hosts": ["127.0.0.1", node_address(), "GATEWAY"],
        "ports": ports,
        "urls": [h.url for h in net_hosts.values()],
        "dashboards": dashboards,
        "marker": str(marker),
    }
    (tmp_path / "attack.py").write_text(PROBE)
    result = run_cli(["run", "attack.py", json.dumps(targets)], tmp_path, rgrid_env, timeout=600)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    opened = [target for target, outcome in found["connects"].items() if outcome == "open"]
    assert opened == [], f"the job reached {opened}"
    assert found["urls"][net_hosts["public"].url] == net_hosts["public"].body
    for name in ("private", "metadata"):
        assert found["urls"][net_hosts[name].url] != net_hosts[name].body
    for dashboard in dashboards:
        assert found["urls"][dashboard] not in (200, 201)
    assert not marker.exists()


@ONE_BACKEND
def test_the_job_sees_no_grid_secret_on_disk(
    tmp_path: Path, rgrid_env: dict[str, str], ray_head: RayHead
) -> None:
    """The Ray token is passed as a path no sandbox binds: not in the job's
    environment, not readable from inside."""
    code = (
        "import os\n"
        "print(any(k.startswith('RAY_') for k in os.environ if k != 'RAY_TOKEN_AT'))\n"
        "print(os.path.exists(os.environ['RAY_TOKEN_AT']))\n"
    )
    (tmp_path / "look.py").write_text(code)
    # Named through --env, not as an argument: a path argument would be shipped.
    result = run_cli(["run", "--env", f"RAY_TOKEN_AT={ray_head.token_path}", "look.py"], tmp_path, rgrid_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]


def test_namespaces_left_by_dead_runners_are_found(tmp_path: Path) -> None:
    """A runner killed with its node never removes its namespace, and the
    restarted agent has a new worker id: any agent's start removes job
    namespaces that are old and empty (JobNetwork.install), never a young
    one or one in use."""
    old, busy, young = "rgrid.gone-1.a-1", "rgrid.gone-1.b-1", "rgrid.gone-1.c-1"
    job = None
    try:
        for name in (old, busy):
            subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
        job = subprocess.Popen(["ip", "netns", "exec", busy, "sleep", "60"])
        time.sleep(1.5)
        subprocess.run(["ip", "netns", "add", young], check=True, capture_output=True)
        found = abandoned_namespaces(older_than_s=1.0)
        assert old in found
        assert busy not in found and young not in found
    finally:
        if job is not None:
            job.kill()
            job.wait()
        for name in (old, busy, young):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def test_an_attempt_takes_a_free_slot_and_a_full_subnet_fails_cleanly() -> None:
    """Creating a slot's host interface is the claim: a slot whose interface
    exists belongs to another attempt, so the next one is tried; with none
    free the attempt fails with a clear error and leaves no namespace."""
    network = job_network(RunnerSettings(job_subnet="10.253.7.240/28"), owner="test-slots")  # 4 slots
    taken = [f"{HOST_IF_PREFIX}{slot}" for slot in range(3)]
    try:
        for name in taken:
            subprocess.run(
                ["ip", "link", "add", name, "type", "veth", "peer", "name", f"{name}p"], check=True
            )
        with network.attach("probe-3") as netns:
            inside = subprocess.run(
                ["ip", "-n", netns.name, "-o", "-4", "addr", "show", "dev", "eth0"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            assert "10.253.7.254/30" in inside  # the last slot's job address
            with pytest.raises(JobNetError, match="no free job network slot"), network.attach("probe-4"):
                pass
        assert not any(line.startswith("rgrid.test-slots.") for line in _namespaces())
    finally:
        for name in taken:
            subprocess.run(["ip", "link", "del", name], capture_output=True, check=False)
