"""The CLI contract of DESIGN.md: exit codes, one-line errors, --json,
id prefixes, detaching, cancelling and following."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.support.testhosts import NetHost

SLEEPER = (
    "import sys, time, urllib.request\n"
    "print('waiting', flush=True)\n"
    "gate = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1].startswith('http') else None\n"
    "for _ in range(600):\n"
    "    if gate and urllib.request.urlopen(gate).read() == b'open':\n"
    "        break\n"
    "    time.sleep(0.1)\n"
    "print('finished', flush=True)\n"
)


class Gate:
    """A URL the sandboxed script polls, on the "public" test host (a job
    reaches nothing of its node, so no loopback server would do); the test
    opens it by changing the file the host serves."""

    def __init__(self, host: NetHost) -> None:
        name = f"gate-{uuid.uuid4().hex}"
        self.path = host.served / name
        self.path.write_bytes(b"closed")
        self.url = f"http://{host.address}:{host.port}/{name}"

    def open(self) -> None:
        self.path.write_bytes(b"open")


@pytest.fixture
def gate(net_hosts: dict[str, NetHost]) -> Iterator[Gate]:
    g = Gate(net_hosts["public"])
    yield g
    g.path.unlink(missing_ok=True)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def wait_for_status(
    env: dict[str, str], cwd: Path, execution_id: str, wanted: set[str], timeout: float = 60
) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = json.loads(run_cli(["status", execution_id, "--json"], cwd, env).stdout)
        if status["status"] in wanted or time.monotonic() > deadline:
            return status
        time.sleep(0.1)


def test_missing_script_is_a_usage_error(tmp_path: Path, rgrid_env: dict[str, str]) -> None:
    result = run_cli(["run", "nope.py"], tmp_path, rgrid_env)
    assert result.returncode == 2
    assert "script not found: nope.py" in one_line_error(result)


def test_unknown_option_is_a_usage_error(tmp_path: Path, rgrid_env: dict[str, str]) -> None:
    (tmp_path / "s.py").write_text("print(1)\n")
    result = run_cli(["run", "--memory", "lots", "s.py"], tmp_path, rgrid_env)
    assert result.returncode == 2
    assert "invalid --memory" in one_line_error(result)


def test_unreadable_input_is_a_usage_error(tmp_path: Path, rgrid_env: dict[str, str]) -> None:
    """As an unprivileged user (root reads everything), a file without read
    permission is refused before anything is uploaded."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to an unprivileged user")
    (tmp_path / "s.py").write_text("print(1)\n")
    secret = tmp_path / "secret.csv"
    secret.write_text("x\n")
    secret.chmod(0o000)
    home = tmp_path / "nobody-home"
    home.mkdir()
    os.chown(home, 65534, 65534)
    for p in (tmp_path, *tmp_path.parents):
        if p != Path("/"):
            p.chmod(p.stat().st_mode | 0o011)
    env = {**rgrid_env, "RGRID_HOME": str(home), "HOME": str(home)}
    result = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            sys.executable,
            "-m",
            "rgrid",
            "run",
            "s.py",
            "secret.csv",
        ],
        cwd=tmp_path,
        env=env,
        text=True,
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "cannot read secret.csv" in one_line_error(result)


def test_api_unreachable_is_75(tmp_path: Path, rgrid_env: dict[str, str]) -> None:
    (tmp_path / "s.py").write_text("print(1)\n")
    env = {**rgrid_env, "RGRID_API_URL": "http://127.0.0.1:9"}
    result = run_cli(["run", "s.py"], tmp_path, env)
    assert result.returncode == 75
    assert "cannot reach the rgrid API" in one_line_error(result)


def test_wrong_api_key_is_77(tmp_path: Path, rgrid_env: dict[str, str]) -> None:
    (tmp_path / "s.py").write_text("print(1)\n")
    result = run_cli(["run", "s.py"], tmp_path, {**rgrid_env, "RGRID_API_KEY": "rg_wrong"})
    assert result.returncode == 77
    assert "refused the API key" in one_line_error(result)


def test_detach_json_status_and_prefixes(tmp_path: Path, rgrid_env: dict[str, str]) -> None:
    (tmp_path / "s.py").write_text("print('detached hello')\n")
    result = run_cli(["run", "--detach", "--json", "s.py"], tmp_path, rgrid_env)
    assert result.returncode == 0, result.stderr
    execution = json.loads(result.stdout)
    prefix = execution["id"][:6]
    status = wait_for_status(rgrid_env, tmp_path, prefix, {"succeeded", "failed"})
    assert status["id"] == execution["id"]
    assert status["status"] == "succeeded"
    assert [a["status"] for a in status["attempts"]] == ["succeeded"]
    logs = run_cli(["logs", prefix], tmp_path, rgrid_env)
    assert logs.stdout == "detached hello\n"
    listed = json.loads(run_cli(["list", "--json"], tmp_path, rgrid_env).stdout)
    assert execution["id"] in {e["id"] for e in listed["executions"]}
    human = run_cli(["status", prefix], tmp_path, rgrid_env)
    assert execution["id"] in human.stdout and "succeeded" in human.stdout


def test_unknown_id_is_a_clear_error(tmp_path: Path, rgrid_env: dict[str, str]) -> None:
    result = run_cli(["status", "zzzzzz"], tmp_path, rgrid_env)
    assert result.returncode == 2
    assert "no execution 'zzzzzz'" in one_line_error(result)


def processes_with(marker: str) -> list[int]:
    """Host pids whose command line contains marker (the script runs in its
    own pid namespace, so its own getpid() means nothing out here)."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if marker in Path(f"/proc/{name}/cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(name))
            except OSError:
                continue
    return found


def test_cancel_kills_the_running_script(tmp_path: Path, rgrid_env: dict[str, str]) -> None:
    (tmp_path / "sleeper.py").write_text(SLEEPER)
    marker = f"never-created-{os.getpid()}-{time.time_ns()}"
    execution = json.loads(run_cli(["run", "-d", "--json", "sleeper.py", marker], tmp_path, rgrid_env).stdout)
    eid = execution["id"]
    wait_for_status(rgrid_env, tmp_path, eid, {"running"})
    deadline = time.monotonic() + 30
    while not run_cli(["logs", eid], tmp_path, rgrid_env).stdout and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_with(marker)
    assert run_cli(["cancel", eid], tmp_path, rgrid_env).returncode == 0
    status = wait_for_status(rgrid_env, tmp_path, eid, {"cancelled", "failed", "succeeded"})
    assert status["status"] == "cancelled"
    assert processes_with(marker) == []
    assert "finished" not in run_cli(["logs", eid], tmp_path, rgrid_env).stdout


def test_follow_streams_while_the_script_runs(tmp_path: Path, rgrid_env: dict[str, str], gate: Gate) -> None:
    """The script waits for a gate the test opens only after it saw the
    script's first line through `rgrid run`: logs must arrive while running."""
    (tmp_path / "sleeper.py").write_text(SLEEPER)
    proc = subprocess.Popen(
        [sys.executable, "-m", "rgrid", "run", "sleeper.py", gate.url],
        cwd=tmp_path,
        env=rgrid_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "waiting\n"
    gate.open()
    rest, _err = proc.communicate(timeout=60)
    assert rest == "finished\n"
    assert proc.returncode == 0


def test_ctrl_c_detaches_and_the_run_goes_on(tmp_path: Path, rgrid_env: dict[str, str], gate: Gate) -> None:
    (tmp_path / "sleeper.py").write_text(SLEEPER)
    proc = subprocess.Popen(
        [sys.executable, "-m", "rgrid", "run", "sleeper.py", gate.url],
        cwd=tmp_path,
        env=rgrid_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "waiting\n"
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "detached" in err and "rgrid wait" in err and "rgrid cancel" in err
    eid = err.split("detached; ")[1].split()[0]
    gate.open()
    assert wait_for_status(rgrid_env, tmp_path, eid, {"succeeded", "failed"})["status"] == "succeeded"


def test_output_that_would_escape_the_output_dir_is_refused(
    tmp_path: Path, rgrid_env: dict[str, str]
) -> None:
    """A folder in the output dir that is a symlink to elsewhere must not let
    an output land outside the output dir."""
    outside = tmp_path / "outside"
    outside.mkdir()
    project = tmp_path / "project"
    project.mkdir()
    (project / "report").symlink_to(outside)
    (project / "w.py").write_text(
        "import os\nos.makedirs('report', exist_ok=True)\nopen('report/x.txt', 'w').write('x')\n"
    )
    result = run_cli(["run", "w.py"], project, rgrid_env)
    assert result.returncode == 2
    assert "refusing output path 'report/x.txt'" in one_line_error(result)
    assert not (outside / "x.txt").exists()


def test_retry_runs_again_as_a_linked_execution(tmp_path: Path, rgrid_env: dict[str, str]) -> None:
    (tmp_path / "flaky.py").write_text("import sys\nprint('try')\nsys.exit(4)\n")
    first = run_cli(["run", "flaky.py"], tmp_path, rgrid_env)
    assert first.returncode == 4
    old = json.loads(run_cli(["list", "--json", "--limit", "1"], tmp_path, rgrid_env).stdout)["executions"][0]
    retried = run_cli(["retry", old["id"], "--json"], tmp_path, rgrid_env)
    assert retried.returncode == 0, retried.stderr
    new = json.loads(retried.stdout)
    assert new["id"] != old["id"] and new["retry_of"] == old["id"]
    final = wait_for_status(rgrid_env, tmp_path, new["id"], {"succeeded", "failed"})
    assert final["exit_code"] == 4 and len(final["attempts"]) == 1
    assert run_cli(["logs", new["id"]], tmp_path, rgrid_env).stdout == "try\n"


def test_a_run_no_node_can_fit_fails_at_once_as_unschedulable(
    tmp_path: Path, rgrid_env: dict[str, str]
) -> None:
    """No autoscaler here: nothing could ever add a node with 200 CPUs."""
    (tmp_path / "s.py").write_text("print('never')\n")
    started = time.monotonic()
    result = run_cli(["run", "--cpu", "200", "s.py"], tmp_path, rgrid_env)
    assert result.returncode == 2, result.stderr
    assert time.monotonic() - started < 60  # it did not wait for anything
    assert "unschedulable" in result.stderr and "needs 200 CPUs" in result.stderr
    assert "no autoscaler adds nodes" in result.stderr
    assert "never" not in result.stdout


def test_a_waiting_run_says_why_and_logs_follow_exits_like_run(
    tmp_path: Path, rgrid_env: dict[str, str], gate: Gate
) -> None:
    deadline = time.monotonic() + 60
    while True:  # the driver may not have read the cluster yet
        grid = json.loads(run_cli(["workers", "--json"], tmp_path, rgrid_env).stdout)["grid"]
        if grid["cpus"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    # The test grid's Ray is its head alone: one run of all its CPUs fills it.
    (tmp_path / "sleeper.py").write_text(SLEEPER)
    (tmp_path / "fail.py").write_text("import sys\nprint('bad input', file=sys.stderr)\nsys.exit(3)\n")
    hog = json.loads(
        run_cli(
            ["run", "-d", "--json", "--cpu", f"{grid['cpus']:g}", "sleeper.py", gate.url], tmp_path, rgrid_env
        ).stdout
    )
    try:
        # An earlier test's run may still hold a CPU for a while.
        assert (
            wait_for_status(rgrid_env, tmp_path, hog["id"], {"running"}, timeout=180)["status"] == "running"
        )
        waiting = subprocess.Popen(
            [sys.executable, "-m", "rgrid", "run", "fail.py"],
            cwd=tmp_path,
            env=rgrid_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc_line(waiting, "waiting:").startswith("rgrid: waiting: the grid's")
    finally:
        gate.open()  # the hog ends whatever happened: the grid is the next test's
    _out, err = waiting.communicate(timeout=120)
    assert waiting.returncode == 3 and "bad input" in err
    eid = json.loads(run_cli(["list", "--json"], tmp_path, rgrid_env).stdout)["executions"][0]["id"]
    followed = run_cli(["logs", "--follow", eid], tmp_path, rgrid_env)
    assert followed.returncode == 3 and "bad input" in followed.stderr


def proc_line(proc: subprocess.Popen[str], marker: str) -> str:
    """The first line of the process's stderr holding marker."""
    assert proc.stderr is not None
    for line in proc.stderr:
        if marker in line:
            return line.strip()
    raise AssertionError(f"no {marker!r} line")


def test_logs_of_a_batch_id_says_what_to_do(tmp_path: Path, rgrid_env: dict[str, str]) -> None:
    result = run_cli(["logs", "b-abcdefgh"], tmp_path, rgrid_env)
    assert result.returncode == 2
    assert "is a batch" in one_line_error(result)


def test_a_detached_run_or_batch_is_followed_again_with_wait(
    tmp_path: Path, rgrid_env: dict[str, str]
) -> None:
    (tmp_path / "job.py").write_text(
        "import sys\nopen('out.txt', 'w').write(sys.argv[-1])\nprint('did', sys.argv[-1])\n"
        "sys.exit(3 if sys.argv[-1].endswith('b.txt') else 0)\n"
    )
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("a")
    (tmp_path / "in" / "b.txt").write_text("b")
    one = run_cli(["run", "-d", "job.py", "in/b.txt"], tmp_path, rgrid_env).stdout.strip()
    waited = run_cli(["wait", one, "--output-dir", "single"], tmp_path, rgrid_env)
    assert waited.returncode == 3 and waited.stdout == "did in/b.txt\n"
    assert (tmp_path / "single" / "out.txt").read_text() == "in/b.txt"
    batch = run_cli(["run", "-d", "--batch", "in/*.txt", "job.py"], tmp_path, rgrid_env).stdout.strip()
    assert batch.startswith("b-")
    followed = run_cli(["wait", batch], tmp_path, rgrid_env)
    assert followed.returncode == 1
    assert "2 inputs" in followed.stderr and "in/b.txt: failed (exit code 3)" in followed.stderr
    assert f"rgrid retry {batch} --failed" in followed.stderr
    assert (tmp_path / "outputs" / "in" / "a" / "out.txt").read_text() == "in/a.txt"


def test_cost_on_a_grid_with_no_priced_node_says_so_in_one_line(
    tmp_path: Path, rgrid_env: dict[str, str]
) -> None:
    result = run_cli(["cost"], tmp_path, rgrid_env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("no priced node since") and "ran for free" in lines[0]
