"""What Ray's processes can see of the control plane. Every process the
Ray token reaches (the API's driver, raylets and their workers) is within
reach of any compromised node: none may hold a server secret, and the driver
never unpickles what a worker sends back."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from rgrid.local import components
from tests.support.services import ApiServer, RayHead

# The variables of a control server that must never reach a Ray process.
SERVER_SECRETS = (
    "RGRID_DATABASE_URL",
    "RGRID_S3_SECRET_KEY",
    "RGRID_S3_ACCESS_KEY",
    "RGRID_RUNNER_SECRET",
    "RGRID_WORKER_TOKEN",
    "RGRID_HEAD_TOKEN",
    "RGRID_BOOTSTRAP_API_KEY",
    "RGRID_API_URL",
)


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(item.decode(errors="replace").partition("=")[::2] for item in raw.split(b"\0") if item)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [root]
    while frontier:
        kids = [pid for pid, ppid in parents.items() if ppid in frontier]
        found += kids
        frontier = kids
    return found


def test_the_drivers_environment_holds_no_server_setting(api: ApiServer) -> None:
    deadline = time.monotonic() + 60
    while not (drivers := [p for p in _descendants(api.proc.pid) if "rgrid_runner.raydriver" in _cmdline(p)]):
        assert time.monotonic() < deadline, "the API never started its Ray driver"
        time.sleep(0.2)
    for pid in drivers:
        env = _environ(pid)
        assert env, "the driver's environment could not be read"
        assert not [k for k in env if k.startswith("RGRID_")], sorted(env)
        # What it does need: the Ray token, by value where it runs as the Ray user.
        assert "RAY_AUTH_TOKEN" in env or "RAY_AUTH_TOKEN_PATH" in env


def test_raylets_and_ray_workers_hold_no_agent_or_server_secret(ray_head: RayHead) -> None:
    assert "RGRID_HEAD_TOKEN" in _environ(ray_head.proc.pid)  # the head's agent holds its own credential ...
    rays = [pid for pid in _descendants(ray_head.proc.pid) if "ray" in _cmdline(pid).lower()]
    assert any("raylet" in _cmdline(pid) for pid in rays)
    for pid in rays:
        leaked = [k for k in SERVER_SECRETS if k in _environ(pid)]
        assert not leaked, f"{_cmdline(pid)[:80]} holds {leaked}"  # ... and nothing below it does


HOSTILE_RESULT = """
import io, sys, threading, time
import ray
from rgrid.wire import AttemptTicket
from rgrid_runner.driver_messages import Submit
from rgrid_runner.raydriver import RayDriver

address, marker = sys.argv[1], sys.argv[2]

class Bomb:
    # Unpickling this runs open(marker, "w"): any code a node chooses could run.
    def __reduce__(self):
        return (open, (marker, "w"))

def hostile(_ticket):
    return Bomb()

out = io.BytesIO()
driver = RayDriver(address, out)
driver._remote = ray.remote(max_retries=0)(hostile)
ray.init(address=address, namespace="rgrid-test", log_to_driver=False)
ticket = AttemptTicket(execution_id="bomb", attempt=1, api_url="http://127.0.0.1:9", token="t")
driver._submit(Submit(ticket=ticket, cpu=0.1, memory_mb=64, runtime="python:3.11"))
ref = next(iter(driver._inflight))
watch = threading.Thread(target=driver._watch, daemon=True)
watch.start()
deadline = time.monotonic() + 90
while b"settled" not in out.getvalue():
    assert time.monotonic() < deadline, "the task never settled"
    time.sleep(0.1)
driver._stop.set()
print("SETTLED", out.getvalue().decode().strip())
import os
print("AFTER_SETTLE", os.path.exists(marker))
try:
    ray.get(ref)  # the control: what a driver that unpickled would have run
except Exception as exc:
    print("GET_FAILED", type(exc).__name__)
print("AFTER_GET", os.path.exists(marker))
"""


def test_the_driver_never_unpickles_what_a_task_returns(ray_head: RayHead, tmp_path: Path) -> None:
    """A compromised node makes its task return a pickle that runs code when
    loaded. The driver reports the task ended and never loads it; loading it
    (the control) would have run the node's code in the control plane."""
    marker = tmp_path / "pwned"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RGRID_", "RAY_"))}
    env.update(components.ray_env(ray_head.token_path))
    result = subprocess.run(
        [sys.executable, "-c", HOSTILE_RESULT, ray_head.address, str(marker)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert "SETTLED" in result.stdout, result.stdout + result.stderr
    assert "AFTER_SETTLE False" in result.stdout, result.stdout
    assert "AFTER_GET True" in result.stdout, result.stdout  # the bomb was real
