"""Ray is one trust domain, and the control plane is outside it.

A compromised node holds the Ray token. These tests use it as such a node
would, against the local grid (where the API server, its database and S3
share the host with Ray): a Ray job submitted through the dashboard scans
every process's environment and every file it can open for the grid's
secrets, and tries the node's attempt service with a forged token and with
smuggled fields. Every Ray process runs as the unprivileged Ray user."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_cli

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SCANNER = Path(__file__).resolve().parents[1] / "support" / "secretscan.py"
# Every process that belongs to Ray, by what it runs.
RAY_PROCESS = re.compile(
    r"ray/core/src|ray/dashboard|ray/_private|ray/autoscaler|ray\.util\.client|^ray::|raystart|raydriver"
)

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="Ray drops to its own user only when started as root"
)


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _uid(pid: str) -> int | None:
    """The real uid (its /proc entry is root's when it is not dumpable)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:")))


def test_a_ray_job_finds_no_control_plane_secret_and_cannot_use_the_attempt_service(
    tmp_path: Path, local_env: dict[str, str]
) -> None:
    project = tmp_path / "project"
    shutil.copytree(EXAMPLES, project / "examples")
    ran = run_cli(
        ["run", "--json", "examples/hello.py", "examples/data.csv"], project, local_env, timeout=240
    )
    assert ran.returncode == 0, ran.stderr
    execution_id = json.loads(ran.stdout)["id"]

    local = Path(local_env["RGRID_HOME"]) / "local"
    secrets = json.loads((local / "secrets.json").read_text())
    wanted = {hashlib.sha256(value.encode()).hexdigest(): name for name, value in secrets.items()}
    assert {"api_key", "s3_secret_key", "runner_secret", "head_token", "worker_token"} <= set(wanted.values())
    ports = json.loads((local / "state.json").read_text())["ports"]

    job = tmp_path / "job"
    job.mkdir()
    shutil.copy(SCANNER, job / "secretscan.py")
    env = {
        **local_env,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": (local / "ray-token").read_text().strip(),
    }
    submitted = subprocess.run(
        [
            str(Path(sys.executable).parent / "ray"),
            "job",
            "submit",
            f"--address=http://127.0.0.1:{ports['ray']['dashboard']}",
            f"--working-dir={job}",
            "--",
            "python",
            "secretscan.py",
            execution_id,
            *wanted,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    line = next((x for x in submitted.stdout.splitlines() if x.startswith("SCAN ")), None)
    assert line is not None, submitted.stdout[-3000:] + submitted.stderr[-3000:]
    report = json.loads(line[5:])

    ray_uid = pwd.getpwnam("rgrid-ray").pw_uid
    assert report["uid"] == ray_uid
    assert report["files_read"] > 1000 and report["environs_read"] > 0  # it did look
    assert report["hits"] == [], [(h, [wanted.get(d) for d in wanted if d in h]) for h in report["hits"]]
    assert report["forged_token"] == "stale"  # the API refused the token: nothing ran
    assert report["smuggled_fields"] == "refused"
    assert report["own_api"] == "refused"  # only the node's own API hands out specs

    # Every Ray process of the grid, the API's driver included, runs as the Ray user.
    rays = {pid: _cmdline(pid) for pid in filter(str.isdigit, os.listdir("/proc"))}
    rays = {pid: cmd for pid, cmd in rays.items() if RAY_PROCESS.search(cmd)}
    assert any("raylet" in cmd for cmd in rays.values()) and any("raydriver" in cmd for cmd in rays.values())
    as_root = {cmd[:120] for pid, cmd in rays.items() if _uid(pid) not in (ray_uid, None)}
    assert not as_root
