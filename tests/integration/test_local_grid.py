"""The embedded grid: started by the first `rgrid run`, reused, reported,
healed by its supervisor after a crash, and stopped without leaving
anything behind."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import time
from pathlib import Path

import httpx

from rgrid.local.procs import session_members
from tests.conftest import run_cli

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def pieces(env: dict[str, str], cwd: Path) -> dict[str, dict]:
    result = run_cli(["local", "status", "--json"], cwd, env)
    return {p["name"]: p for p in json.loads(result.stdout)["pieces"]}


def test_local_grid_lifecycle(tmp_path: Path, local_env: dict[str, str]) -> None:
    project = tmp_path / "project"
    shutil.copytree(EXAMPLES, project / "examples")

    first = run_cli(["run", "examples/hello.py", "examples/data.csv"], project, local_env, timeout=240)
    assert first.returncode == 0, first.stderr
    assert "starting the local grid" in first.stderr
    for piece in ("S3 (SeaweedFS)", "the Ray head", "the rgrid API"):  # each said as it comes up
        assert f"rgrid: {piece} is up (" in first.stderr
    assert re.search(r"local grid is up in \d+ s", first.stderr)
    assert "Ray dashboard: http://127.0.0.1:" in first.stderr
    assert "mean temperature 8.88" in first.stdout
    assert json.loads((project / "summary.json").read_text())["rows"] == 6

    second = run_cli(["run", "examples/hello.py", "examples/data.csv"], project, local_env)
    assert second.returncode == 0
    assert "starting" not in second.stderr

    # RGRID_API_KEY overrides the local grid's own key: a wrong one is refused.
    wrong_key = {**local_env, "RGRID_API_KEY": "rg_not-a-key"}
    refused = run_cli(["run", "examples/hello.py", "examples/data.csv"], project, wrong_key)
    assert refused.returncode == 77, refused.stderr
    assert "refused the API key" in refused.stderr
    assert run_cli(["list"], project, wrong_key).returncode == 77

    home = Path(local_env["RGRID_HOME"])
    for secret in (home / "local" / "secrets.json", home / "local" / "state.json"):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600

    status = run_cli(["local", "status"], project, local_env)
    assert status.returncode == 0
    assert status.stdout.index("Ray dashboard") < status.stdout.index("rgrid API")
    assert "sandbox: bubblewrap" in status.stdout
    console_url = re.search(r"web console: (http://127\.0\.0\.1:\d+/ui/)", status.stdout)
    assert console_url is not None, status.stdout
    assert httpx.get(console_url[1]).headers["location"] == "/ui/login"  # the console, asking who you are
    state = pieces(local_env, project)
    assert {p["state"] for p in state.values()} == {"running"}
    assert all(p["url"].startswith("http://127.0.0.1:") for p in state.values())

    # More nodes: each its own agent and raylet, registered and heartbeating.
    more = run_cli(["local", "up", "--workers", "1"], project, local_env, timeout=240)
    assert more.returncode == 0
    assert "worker nodes: 0 -> 1" in more.stderr and "worker node 1 is up" in more.stderr
    assert pieces(local_env, project)["worker-1"]["state"] == "running"
    assert "workers: 1 worker node beside the head" in run_cli(["local", "status"], project, local_env).stdout
    deadline = time.monotonic() + 40
    listed: list[dict] = []

    def registered_with_node_ids() -> bool:
        return len(listed) == 2 and all(len(w["ray_node_id"] or "") == 56 for w in listed)

    while not registered_with_node_ids() and time.monotonic() < deadline:
        listed = json.loads(run_cli(["workers", "--json"], project, local_env).stdout)["workers"]
        time.sleep(0.2)
    assert sorted(w["id"] for w in listed) == ["local-head", "local-worker-1"]
    assert all(w["status"] == "active" and w["heartbeat_age_s"] < 5 and w["pid"] for w in listed)
    assert registered_with_node_ids()
    state = pieces(local_env, project)

    # A crashed piece is restarted by the supervisor, nobody typing a command,
    # and `status` tells how often and why.
    os.killpg(state["s3"]["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        s3 = pieces(local_env, project)["s3"]
        if s3["restarts"] == 1 and s3["state"] == "running":
            break
        time.sleep(0.5)
    assert (s3["restarts"], s3["state"]) == (1, "running")
    assert s3["last_reason"] == "killed by SIGKILL"
    assert s3["pid"] != state["s3"]["pid"]
    table = run_cli(["local", "status"], project, local_env).stdout
    assert "killed by SIGKILL" in table
    again = run_cli(["run", "examples/fail.py"], project, local_env)
    assert again.returncode == 3

    # `down` stops the supervisor and every process of every piece, and nothing else.
    status = json.loads(run_cli(["local", "status", "--json"], project, local_env).stdout)
    sessions = [p["pid"] for p in status["pieces"]] + [status["supervisor"]["pid"]]
    down = run_cli(["local", "down"], project, local_env)
    assert down.returncode == 0
    assert all(session_members(pid) == [] for pid in sessions)
    assert {p["state"] for p in pieces(local_env, project).values()} == {"stopped"}


def test_reading_commands_do_not_start_the_grid(tmp_path: Path, local_env: dict[str, str]) -> None:
    result = run_cli(["list"], tmp_path, local_env)
    assert result.returncode == 75
    assert "local grid is not running" in result.stderr
    assert not (Path(local_env["RGRID_HOME"]) / "local" / "state.json").exists()
