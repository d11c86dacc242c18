"""The exact commands the sandboxes build, and a Docker run where an engine
answers (none does on this project's machines)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from rgrid_runner.limits import Limits
from rgrid_runner.sandbox import Bubblewrap, Docker, Job, JobUser, Plain

JOB_UID, JOB_GID = JobUser().uid, JobUser().gid


def job(tmp_path: Path, **kw: object) -> Job:
    base = dict(
        argv=["python", "s.py", "a b"],
        workdir=tmp_path,
        env={"PATH": "/usr/bin", "K": "v"},
        readonly=[Path("/opt/py/3.12")],
        limits=Limits(memory_bytes=512 * 1024**2, cpu=1.5, max_pids=64),
        name="rgrid-x-1",
        image="python:3.12-slim",
    )
    base.update(kw)
    return Job(**base)  # type: ignore[arg-type]


def test_docker_command(tmp_path: Path) -> None:
    launch = Docker("docker").launch(job(tmp_path, network=False))
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
        "--workdir=/job",
        "--env=PATH=/usr/bin",
        "--env=K=v",
        "--env=HOME=/job",
        "python:3.12-slim",
        "python",
        "s.py",
        "a b",
    ]
    assert "--network=rgrid-jobs" in Docker().launch(job(tmp_path)).argv


def test_bubblewrap_command_isolates(tmp_path: Path) -> None:
    argv = Bubblewrap("bwrap").launch(job(tmp_path, network=False)).argv
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
    tail = argv[argv.index("setpriv") :]
    assert (
        f"--reuid={JOB_UID}" in tail and "--no-new-privs" in tail and tail[-3:] == ["python", "s.py", "a b"]
    )


def test_bubblewrap_networked_job_enters_its_own_namespace(tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    launch = Bubblewrap("bwrap").launch(
        job(tmp_path, netns=Path("/run/netns/rgrid.w.x-1"), resolv_conf=resolv)
    )
    assert launch.argv[:4] == ["nsenter", "--net=/run/netns/rgrid.w.x-1", "--", "bwrap"]
    assert "--unshare-net" not in launch.argv
    i = launch.argv.index("/etc/resolv.conf")
    assert launch.argv[i - 2 : i] == ["--ro-bind", str(resolv)]
    with pytest.raises(ValueError, match="own network namespace"):
        Bubblewrap().launch(job(tmp_path))


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
    sandbox = Docker()
    sandbox.prepare(tmp_path)
    # Without network: the jobs' Docker network is the node agent's to create.
    launch = sandbox.launch(job(tmp_path, argv=["python", "s.py"], readonly=[], network=False))
    out = subprocess.run(launch.argv, env=launch.env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(JOB_UID)
    assert (tmp_path / "out.txt").read_text() == "x"
