"""The bubblewrap sandbox attacked as a hostile tenant would, with real
bubblewrap, setpriv, seccomp, cgroups and network namespaces (as root, as
on a worker node): nothing the tenant chooses runs with root or a
capability, the seccomp filter holds, and two jobs on one node cannot
reach each other."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from rgrid.wire import Stream
from rgrid_runner.cgroups import CgroupManager
from rgrid_runner.confine import Confined, Confinement
from rgrid_runner.limits import Limits
from rgrid_runner.runtimes import Interpreter, detect
from rgrid_runner.sandbox import Bubblewrap, Job
from rgrid_runner.seccomp import _library
from rgrid_runner.slots import JobSlots, JobUser
from rgrid_runner.systools import found, system_tool
from rgrid_runner.workdisk import DiskLimits, WorkDisks
from tests.support.attacks import RECORDER_C

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or found("bwrap") is None,
    reason="the bubblewrap sandbox drops jobs to their own uid only as root (CI runs as root with bwrap)",
)


# Stands in for setpriv, nsenter and env first on the job's PATH: if a
# privileged step ever ran it, the record would say so.
FAKE_TOOL = '#!/bin/sh\necho "FAKE $0 $(id -u)" >> /job/record\nexec /usr/bin/env "$@"\n'


@pytest.fixture
def interp() -> Interpreter:
    return detect()["python:3.11"]


@pytest.fixture
def confinement() -> Confinement:
    return Confinement(
        Bubblewrap(system_tool("bwrap")),
        CgroupManager(),
        Limits(memory_bytes=512 * 2**20, cpu=1.0, max_pids=64),
        threading.Event(),
    )


@pytest.fixture
def slots(tmp_path: Path) -> JobSlots:
    return JobSlots(tmp_path / "slots", 300_000, 4)


@pytest.fixture
def netns() -> Iterator[Path]:
    """A bare network namespace, as jobnet gives each attempt (no rules
    needed here: only the privileged `nsenter` step is under test)."""
    name = f"rgrid-test-{uuid.uuid4().hex[:8]}"
    subprocess.run([system_tool("ip"), "netns", "add", name], check=True)
    try:
        yield Path("/run/netns") / name
    finally:
        subprocess.run([system_tool("ip"), "netns", "del", name], check=False)


def run_job(
    confinement: Confinement,
    user: JobUser,
    interp: Interpreter,
    workdir: Path,
    code: str,
    env: dict[str, str] | None = None,
    netns: Path | None = None,
) -> tuple[Confined, str]:
    workdir.mkdir(parents=True, exist_ok=True)
    confinement.sandbox.prepare(workdir, user)
    job = Job(
        argv=[interp.executable, "-c", code],
        workdir=workdir,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        limits=confinement.limits,
        user=user,
        readonly=[Path(interp.prefix)],
        network=netns is not None,
        netns=netns,
    )
    out: list[str] = []

    def sink(stream: Stream, text: str) -> None:
        out.append(text)

    ended = confinement.run(job, f"test-{uuid.uuid4().hex[:8]}", 60, sink)
    return ended, "".join(out)


def test_preload_and_path_never_reach_a_privileged_step(
    tmp_path: Path, confinement: Confinement, slots: JobSlots, interp: Interpreter, netns: Path
) -> None:
    """The issue's attack: the job's own input as LD_PRELOAD, and fake
    setpriv/nsenter/env first on its PATH. Every process that loads the
    library is the job's uid with no effective capability, and no fake runs."""
    gcc = found("gcc") or found("cc")
    assert gcc, "a C compiler is needed to build the attack library"
    workdir = tmp_path / "work"
    (workdir / "bin").mkdir(parents=True)
    record = workdir / "record"
    source = tmp_path / "recorder.c"
    source.write_text(RECORDER_C)
    subprocess.run(
        [gcc, "-shared", "-fPIC", f'-DHOST_RECORD="{record}"', "-o", str(workdir / "lib.so"), str(source)],
        check=True,
    )
    for tool in ("setpriv", "nsenter", "env", "bwrap"):
        (workdir / "bin" / tool).write_text(FAKE_TOOL)
        (workdir / "bin" / tool).chmod(0o755)
    code = (
        "import subprocess, threading\n"
        "subprocess.run(['/bin/true'])\n"
        "t = threading.Thread(target=lambda: None); t.start(); t.join()\n"
        "print('ran')\n"
    )
    env = {"LD_PRELOAD": "/job/lib.so", "PATH": "/job/bin:/usr/bin:/bin", "LD_LIBRARY_PATH": "/job"}
    with slots.claim() as user:
        ended, output = run_job(confinement, user, interp, workdir, code, env, netns)
    assert ended.outcome.exit_code == 0, output
    assert output == "ran\n"
    lines = record.read_text().splitlines()
    assert not [line for line in lines if line.startswith("FAKE")], lines
    for name, uid, cap in (line.split() for line in lines if not line.startswith("FAKE")):
        assert uid == str(user.uid), (name, uid)
        assert cap == "0000000000000000", (name, cap)
    names = [line.split()[0] for line in lines]
    assert any(n.startswith("python") for n in names), lines
    assert "true" in names, lines  # the job's own child loaded it too


def test_seccomp_refuses_namespaces_keyrings_and_mounts(
    tmp_path: Path, confinement: Confinement, slots: JobSlots, interp: Interpreter
) -> None:
    keyctl = _library().seccomp_syscall_resolve_name(b"keyctl")
    code = f"""
import ctypes, errno, json, os, subprocess, sys, threading, _ctypes, _decimal, _sqlite3
libc = ctypes.CDLL(None, use_errno=True)
result = {{}}
# KEYCTL_GET_KEYRING_ID of the session keyring: allowed to any process without the filter.
rc = libc.syscall({keyctl}, 0, -3, 0)
result["keyctl"] = errno.errorcode.get(ctypes.get_errno(), "ok") if rc < 0 else "ok"
result["unshare_user"] = subprocess.run(["unshare", "-U", "true"], capture_output=True).returncode
result["unshare_user_mount"] = subprocess.run(
    ["unshare", "-Ur", "mount", "-t", "tmpfs", "none", "/tmp"], capture_output=True
).returncode
os.makedirs("/tmp/m", exist_ok=True)
rc = libc.mount(b"none", b"/tmp/m", b"tmpfs", 0, None)
result["mount"] = errno.errorcode.get(ctypes.get_errno(), "ok") if rc < 0 else "ok"
result["seccomp"] = [l.split()[1] for l in open("/proc/self/status") if l.startswith("Seccomp:")][0]
# What ordinary programs do still works: threads, subprocesses, C extensions.
box = []
threads = [threading.Thread(target=box.append, args=(i,)) for i in range(8)]
[t.start() for t in threads]; [t.join() for t in threads]
result["threads"] = len(box)
result["subprocess"] = subprocess.run([sys.executable, "-c", "print(6 * 7)"], capture_output=True, text=True).stdout
result["sqlite"] = _sqlite3.connect(":memory:").execute("select 1 + 1").fetchone()[0]
print(json.dumps(result))
"""
    with slots.claim() as user:
        ended, output = run_job(confinement, user, interp, tmp_path / "work", code)
    assert ended.outcome.exit_code == 0, output
    result = json.loads(output)
    assert result == {
        "keyctl": "EPERM",
        "unshare_user": 1,
        "unshare_user_mount": 1,
        "mount": "EPERM",
        "seccomp": "2",
        "threads": 8,
        "subprocess": "42\n",
        "sqlite": 2,
    }


def test_two_jobs_cannot_see_signal_or_read_each_other(
    tmp_path: Path, confinement: Confinement, slots: JobSlots, interp: Interpreter
) -> None:
    """Job A keeps a secret in its work dir and sleeps; job B, on the same
    node at the same time, looks for it every way it can."""
    secret = f"secret-{uuid.uuid4().hex}"
    work_a = tmp_path / "a"
    ready = work_a / "ready"
    code_a = (
        "import os, time\n"
        f"open('secret.txt', 'w').write({secret!r})\n"
        "open('ready', 'w').write('1')\n"
        "time.sleep(60)\n"
    )
    done = threading.Event()
    results: dict[str, tuple[Confined, str]] = {}

    def job_a(user: JobUser) -> None:
        results["a"] = run_job(confinement, user, interp, work_a, code_a)
        done.set()

    with slots.claim() as user_a, slots.claim() as user_b:
        assert user_a.uid != user_b.uid
        thread = threading.Thread(target=job_a, args=(user_a,))
        thread.start()
        deadline = time.monotonic() + 30
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists()
        a_pids = [int(p) for p in os.listdir("/proc") if p.isdigit() and _uid_of(int(p)) == user_a.uid]
        assert a_pids
        code_b = f"""
import json, os, signal
found = {{"pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit())}}
for path in ({str(work_a / "secret.txt")!r}, {str(work_a)!r}, "/proc/1/root/job/secret.txt"):
    try:
        found[path] = open(path).read() if not os.path.isdir(path) else os.listdir(path)
    except OSError as exc:
        found[path] = type(exc).__name__
for pid in {a_pids!r}:
    try:
        os.kill(pid, signal.SIGKILL)
        found[f"kill {{pid}}"] = "sent"
    except OSError as exc:
        found[f"kill {{pid}}"] = type(exc).__name__
print(json.dumps(found))
"""
        ended_b, output_b = run_job(confinement, user_b, interp, tmp_path / "b", code_b)
        confinement.stop.set()
        thread.join(timeout=30)
    assert ended_b.outcome.exit_code == 0, output_b
    found_b = json.loads(output_b)
    assert secret not in output_b
    assert all(pid <= 3 for pid in found_b["pids"]), found_b["pids"]  # its own pid namespace
    assert found_b[str(work_a / "secret.txt")] == "FileNotFoundError"
    assert found_b[str(work_a)] == "FileNotFoundError"
    assert all(
        v in ("ProcessLookupError", "PermissionError") for k, v in found_b.items() if k.startswith("kill")
    )
    ended_a, _ = results["a"]
    assert ended_a.outcome.stopped  # A ran until the test stopped it: B never killed it


def _uid_of(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


@pytest.fixture
def disks(tmp_path: Path) -> WorkDisks:
    disks = WorkDisks(tmp_path / "disks", DiskLimits(max_bytes=16 * 2**20, max_inodes=2000))
    assert disks.available, "loop devices, mkfs.ext4 and overlayfs are there on every node (and in CI)"
    return disks


def _mounts_under(path: Path) -> list[str]:
    return [
        line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(path) in line
    ]


@pytest.mark.parametrize(
    ("code", "reached"),
    [
        ("for i in range(1_000_000):\n    open(f'f{i}', 'w').close()\n", "limit of 2000 files"),
        ("with open('fill.bin', 'wb') as fh:\n    while True:\n        fh.write(b'z' * 2**20)\n", "bytes"),
    ],
    ids=["a-million-empty-files", "a-disk-fill"],
)
def test_the_work_dir_has_a_size_the_kernel_enforces(
    tmp_path: Path,
    confinement: Confinement,
    slots: JobSlots,
    interp: Interpreter,
    disks: WorkDisks,
    code: str,
    reached: str,
) -> None:
    """The job hits its own file system's end (ENOSPC), the runner names
    the limit; its inputs (in the lower layer) are readable and cost it no
    room, even one larger than its whole limit."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    with disks.attach(workdir) as disk:
        big_input = disk.inputs_dir / "big-input.bin"
        big_input.write_bytes(b"i" * 20 * 2**20)
        big_input.chmod(0o444)
        disk.mount()
        probe = "import os\nassert os.path.getsize('big-input.bin') == 20 * 2**20\n" + code
        with slots.claim() as user:
            ended, output = run_job(confinement, user, interp, workdir, probe)
        assert ended.outcome.exit_code != 0
        assert "No space left on device" in output, output
        limit = disk.full()
        assert limit is not None and reached in limit, limit
        assert big_input.read_bytes()[:1] == b"i"
        # Another job on the node goes on writing: its disk is its own.
        other = tmp_path / "other"
        other.mkdir()
        with disks.attach(other) as second:
            second.mount()
            with slots.claim() as user:
                fine, out = run_job(
                    confinement, user, interp, other, "open('ok', 'w').write('ok')\nprint('ok')\n"
                )
            assert fine.outcome.exit_code == 0 and out == "ok\n"
            assert (other / "ok").read_text() == "ok"
    assert _mounts_under(tmp_path) == []
    assert not list((tmp_path / "disks").glob("*.img")) or all(
        p.name.split("-")[0] == str(os.getpid()) for p in (tmp_path / "disks").glob("*.img")
    )  # at most this process's spare


def test_a_runner_that_died_leaves_no_disk_behind(tmp_path: Path) -> None:
    """A runner killed mid-attempt never unmounts; the next runner process
    on the node does, and removes its dirs and image."""
    work_root = tmp_path / "work"
    work_root.mkdir()
    died = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, sys\n"
            "from pathlib import Path\n"
            "from rgrid_runner.workdisk import DiskLimits, WorkDisks\n"
            "root = Path(sys.argv[1])\n"
            "disks = WorkDisks(root.parent / 'disks', DiskLimits(8 * 2**20, 1000))\n"
            "workdir = root / 'x-1-abc'\n"
            "workdir.mkdir()\n"
            "attached = disks.attach(workdir)\n"
            "disk = attached.__enter__()\n"
            "disk.mount()\n"
            "(workdir / 'written').write_text('by the job')\n"
            "os.kill(os.getpid(), 9)\n",
            str(work_root),
        ],
        capture_output=True,
        text=True,
    )
    assert died.returncode == -9, died.stderr
    assert len(_mounts_under(work_root)) == 2  # the overlay and its ext4
    WorkDisks(tmp_path / "disks", DiskLimits(8 * 2**20, 1000))
    assert _mounts_under(work_root) == []
    assert list(work_root.iterdir()) == []
    assert list((tmp_path / "disks").glob("*.img")) == []
