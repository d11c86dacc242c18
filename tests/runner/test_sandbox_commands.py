"""The exact commands the sandboxes build, and a Docker run where an engine
answers (none does on this project's machines)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from rgrid_runner.limits import Limits
from rgrid_runner.sandbox import Bubblewrap, Docker, Job, Launch, Plain
from rgrid_runner.slots import JobUser
from rgrid_runner.systools import PRIVILEGED_ENV, system_tool

JOB_UID, JOB_GID = 200_007, 200_007
USER = JobUser(JOB_UID, JOB_GID, Path("/run/slots/200007.passwd"), Path("/run/slots/200007.group"))


@pytest.fixture
def bwrap() -> Iterator[Bubblewrap]:
    yield Bubblewrap("/usr/bin/bwrap")


def launched(sandbox: Bubblewrap | Docker, job: Job) -> Launch:
    """The launch, with its seccomp file closed (the caller's duty)."""
    launch = sandbox.launch(job)
    launch.close()
    return launch


def job(tmp_path: Path, **kw: object) -> Job:
    base = dict(
        argv=["python", "s.py", "a b"],
        workdir=tmp_path,
        env={"PATH": "/usr/bin", "K": "v"},
        readonly=[Path("/opt/py/3.12")],
        limits=Limits(memory_bytes=512 * 1024**2, cpu=1.5, max_pids=64),
        name="rgrid-x-1",
        image="python:3.12-slim",
        user=USER,
    )
    base.update(kw)
    return Job(**base)  # type: ignore[arg-type]


def test_docker_command(tmp_path: Path) -> None:
    launch = Docker("docker").launch(job(tmp_path, network=False))
    assert launch.env == PRIVILEGED_ENV
    assert launch.argv == [
        "docker",
        "run",
        "--rm",
        "--init",
        "--name",
        "rgrid-x-1",
        "--cpus=1.5",
        "--memory=536870912b",
        "--memory-swap=536870912b",
        "--pids-limit=64",
        f"--user={JOB_UID}:{JOB_GID}",
        "--cap-drop=ALL",
        "--security-opt=no-new-privileges",
        "--read-only",
        "--tmpfs=/tmp:rw,nosuid,nodev",
        "--network=none",
        f"--volume={tmp_path}:/job:rw",
        "--volume=/opt/py/3.12:/opt/py/3.12:ro",
        "--workdir=/job",
        "--env=PATH=/usr/bin",
        "--env=K=v",
        "--env=HOME=/job",
        "--env=TMPDIR=/tmp",
        "python:3.12-slim",
        "python",
        "s.py",
        "a b",
    ]
    assert "--network=rgrid-jobs" in Docker("docker").launch(job(tmp_path)).argv


def test_bubblewrap_command_isolates(tmp_path: Path, bwrap: Bubblewrap) -> None:
    launch = launched(bwrap, job(tmp_path, network=False))
    argv = launch.argv
    for flag in (
        "--die-with-parent",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-net",
        "--clearenv",
        "--new-session",
    ):
        assert flag in argv
    assert argv[argv.index("--bind") + 1 : argv.index("--bind") + 3] == [str(tmp_path), "/job"]
    assert "/opt/py/3.12" in argv and argv[argv.index("/opt") - 3 : argv.index("/opt") + 1] == [
        "--perms",
        "0755",
        "--dir",
        "/opt",
    ]
    assert argv[argv.index("/etc/passwd") - 2 : argv.index("/etc/passwd")] == ["--ro-bind", str(USER.passwd)]
    # /etc readable by the job's uid, or it resolves no name and trusts no certificate.
    assert argv[argv.index("/etc") - 3 : argv.index("/etc")] == ["--perms", "0755", "--dir"]
    assert argv[argv.index("--seccomp") + 1] == str(launch.pass_fds[0])


def test_only_the_unprivileged_step_gets_the_jobs_environment(tmp_path: Path, bwrap: Bubblewrap) -> None:
    """bwrap and setpriv run as root: by absolute path, with a fixed
    environment. The job's variables (LD_PRELOAD, PATH) are set by `env -i`
    after setpriv dropped the uid and every capability."""
    hostile = {"LD_PRELOAD": "/job/lib.so", "PATH": "/job/bin", "GCONV_PATH": "/job"}
    launch = launched(bwrap, job(tmp_path, network=False, env=hostile))
    argv = launch.argv
    assert launch.env == PRIVILEGED_ENV
    setpriv = argv.index(system_tool("setpriv"))
    before, after = argv[:setpriv], argv[setpriv:]
    assert not any("/job/lib.so" in a or a == "/job/bin" for a in before)
    assert [before[i + 1] for i, a in enumerate(before) if a == "--setenv"] == list(PRIVILEGED_ENV)
    assert after[:10] == [
        system_tool("setpriv"),
        f"--reuid={JOB_UID}",
        f"--regid={JOB_GID}",
        "--clear-groups",
        "--no-new-privs",
        "--inh-caps=-all",
        "--ambient-caps=-all",
        "--bounding-set=-all",
        "--",
        system_tool("env"),
    ]
    assert after[10:12] == ["-i", "--"]
    assert {"LD_PRELOAD=/job/lib.so", "PATH=/job/bin", "HOME=/job"} <= set(after[12:-3])
    assert after[-3:] == ["python", "s.py", "a b"]
    assert all(os.path.isabs(a) for a in (argv[0], after[0], after[9]))


def test_bubblewrap_networked_job_enters_its_own_namespace(tmp_path: Path, bwrap: Bubblewrap) -> None:
    resolv = tmp_path / "resolv.conf"
    launch = launched(bwrap, job(tmp_path, netns=Path("/run/netns/rgrid.w.x-1"), resolv_conf=resolv))
    assert launch.argv[:4] == [system_tool("nsenter"), "--net=/run/netns/rgrid.w.x-1", "--", "/usr/bin/bwrap"]
    assert "--unshare-net" not in launch.argv
    i = launch.argv.index("/etc/resolv.conf")
    assert launch.argv[i - 2 : i] == ["--ro-bind", str(resolv)]
    with pytest.raises(ValueError, match="own network namespace"):
        bwrap.launch(job(tmp_path))
    with pytest.raises(ValueError, match="slot's uid"):
        bwrap.launch(job(tmp_path, network=False, user=None))


def test_process_sandbox_is_unisolated(tmp_path: Path) -> None:
    sandbox = Plain()
    assert not sandbox.isolated
    assert sandbox.launch(job(tmp_path)).argv == ["python", "s.py", "a b"]


def _docker_answers() -> bool:
    docker = shutil.which("docker")
    if not docker:
        return False
    return subprocess.run([docker, "info"], capture_output=True, timeout=20).returncode == 0


@pytest.mark.skipif(
    not _docker_answers(),
    reason="no Docker engine answers on this machine "
    "(the docker CLI may be installed, but no daemon runs here)",
)
def test_docker_runs_a_job(tmp_path: Path) -> None:
    (tmp_path / "s.py").write_text("import os\nprint(os.getuid())\nopen('out.txt', 'w').write('x')\n")
    sandbox = Docker(shutil.which("docker") or "docker")
    sandbox.prepare(tmp_path, USER)
    # Without network: the jobs' Docker network is the node agent's to create.
    launch = sandbox.launch(job(tmp_path, argv=["python", "s.py"], readonly=[], network=False))
    out = subprocess.run(launch.argv, env=launch.env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(JOB_UID)
    assert (tmp_path / "out.txt").read_text() == "x"
