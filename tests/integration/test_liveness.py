"""Liveness is not fooled by load: while hundreds of simulated nodes
heartbeat at five times the real rate, the local grid's API keeps
answering /healthz from its event loop, its supervisor restarts nothing,
and a run submitted meanwhile completes."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.integration.test_local_grid import EXAMPLES, pieces
from tests.support.simagents import Swarm, swarm

pytestmark = pytest.mark.slow

AGENTS = 300
INTERVAL_S = 0.4  # the real one is 2 s
LOAD_S = 25.0


def test_a_busy_api_is_not_restarted_and_work_goes_on(tmp_path: Path, local_env: dict[str, str]) -> None:
    project = tmp_path / "project"
    shutil.copytree(EXAMPLES, project / "examples")
    first = run_cli(["run", "examples/hello.py", "examples/data.csv"], project, local_env, timeout=240)
    assert first.returncode == 0, first.stderr
    home = Path(local_env["RGRID_HOME"]) / "local"
    worker_token = json.loads((home / "secrets.json").read_text())["worker_token"]
    before = pieces(local_env, project)
    api_url = before["api"]["url"]
    seen = Swarm()
    until = time.monotonic() + LOAD_S
    load = threading.Thread(
        target=lambda: asyncio.run(swarm(api_url, worker_token, AGENTS, INTERVAL_S, until, seen)), daemon=True
    )
    load.start()
    time.sleep(LOAD_S / 3)  # the swarm enrolled and beats
    during = run_cli(["run", "examples/hello.py", "examples/data.csv"], project, local_env, timeout=120)
    load.join(timeout=LOAD_S + 120)
    assert not load.is_alive()
    assert during.returncode == 0, during.stderr
    assert "mean temperature 8.88" in during.stdout
    beats = len(seen.latencies)
    assert beats > AGENTS * 10, f"only {beats} beats: the load never reached the API"
    assert seen.errors == [], f"{len(seen.errors)} of {beats} beats failed"
    after = pieces(local_env, project)
    assert {name: p["restarts"] for name, p in after.items()} == {
        name: p["restarts"] for name, p in before.items()
    }
    assert after["api"]["pid"] == before["api"]["pid"]
