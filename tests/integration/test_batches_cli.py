"""`rgrid run --batch` end to end through the CLI, on SQLite and PostgreSQL:
per-input outputs, the summary, exit codes, batch ids for status and cancel,
and bad input refused before anything is submitted."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from rgrid.batchplan import plan_batch
from rgrid.cli.batch import submit_batch
from rgrid.client import Client
from rgrid.errors import UsageError
from rgrid.wire import JobSpec
from tests.conftest import run_cli

PROC = """import sys
x = open(sys.argv[1]).read().strip()
open("result.txt", "w").write(x * 2)
print("got", x)
if x == "bad":
    print("first complaint", file=sys.stderr)
    print("this input is bad", file=sys.stderr)
    sys.exit(4)
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "proc.py").write_text(PROC)
    (tmp_path / "data" / "sub").mkdir(parents=True)
    for name, text in (("a.csv", "a"), ("b.csv", "bad"), ("a.json", "j"), ("sub/c.csv", "c")):
        (tmp_path / "data" / name).write_text(text)
    return tmp_path


def test_a_batch_runs_every_input_and_brings_each_ones_outputs_back(
    project: Path, rgrid_env: dict[str, str]
) -> None:
    result = run_cli(["run", "--batch", "data/**/*", "--parallel", "2", "proc.py", "{}"], project, rgrid_env)
    assert result.returncode == 1, result.stderr
    assert "data/b.csv: failed (exit code 4)" in result.stderr
    assert "this input is bad" in result.stderr
    outputs = project / "outputs" / "data"
    assert (outputs / "a.csv" / "result.txt").read_text() == "aa"  # data/a.json shares the stem
    assert (outputs / "a.json" / "result.txt").read_text() == "jj"
    assert (outputs / "sub" / "c" / "result.txt").read_text() == "cc"
    assert (outputs / "b" / "result.txt").read_text() == "badbad"
    assert "got" not in result.stdout  # 1,000 scripts' logs are not interleaved
    batch_id = result.stderr.split("batch ")[1].split(":")[0]
    status = json.loads(run_cli(["status", "--json", batch_id[:5]], project, rgrid_env).stdout)
    assert status["id"] == batch_id and status["status"] == "failed" and status["total"] == 4
    assert status["counts"] == {"succeeded": 3, "failed": 1}
    by_input = {e["input"]: e for e in status["executions"]}
    assert by_input["data/b.csv"]["exit_code"] == 4 and by_input["data/a.csv"]["status"] == "succeeded"

    listed = json.loads(run_cli(["list", "--json"], project, rgrid_env).stdout)
    assert {"id": batch_id, "counts": {"succeeded": 3, "failed": 1}}.items() <= next(
        b for b in listed["batches"] if b["id"] == batch_id
    ).items()
    human = run_cli(["list"], project, rgrid_env).stdout
    assert batch_id in human and "× 4 inputs" in human
    assert sum(e["batch_id"] == batch_id for e in listed["executions"]) == 4

    downloaded = run_cli(["download", batch_id, "again"], project, rgrid_env)
    assert downloaded.returncode == 0, downloaded.stderr
    assert (project / "again" / "outputs" / "data" / "sub" / "c" / "result.txt").read_text() == "cc"

    retried = json.loads(run_cli(["retry", batch_id, "--failed", "--json"], project, rgrid_env).stdout)
    assert retried["id"] != batch_id and retried["total"] == 1
    assert [e["input"] for e in retried["executions"]] == ["data/b.csv"]


def test_a_detached_batch_prints_its_executions_and_can_be_cancelled(
    project: Path, rgrid_env: dict[str, str]
) -> None:
    (project / "slow.py").write_text("import sys, time\ntime.sleep(300)\n")
    result = run_cli(
        ["run", "-d", "--json", "--batch", "data/*.csv", "--parallel", "1", "slow.py"], project, rgrid_env
    )
    assert result.returncode == 0, result.stderr
    batch = json.loads(result.stdout)
    assert batch["id"].startswith("b-") and batch["total"] == 2
    # The reply shows each execution as it is when read: the dispatcher may
    # already have taken the first input, but --parallel 1 holds back the second.
    first, second = batch["executions"]
    assert first["input"] == "data/a.csv" and first["status"] in {"queued", "dispatched", "running"}
    assert (second["input"], second["status"]) == ("data/b.csv", "queued")
    deadline = time.monotonic() + 60
    while (
        json.loads(run_cli(["status", "--json", batch["id"]], project, rgrid_env).stdout)["counts"].get(
            "running"
        )
        != 1
    ):
        assert time.monotonic() < deadline, "the first input never started"
        time.sleep(0.5)
    assert run_cli(["cancel", batch["id"]], project, rgrid_env).returncode == 0
    deadline = time.monotonic() + 60
    while (status := json.loads(run_cli(["status", "--json", batch["id"]], project, rgrid_env).stdout))[
        "status"
    ] == "running":
        assert time.monotonic() < deadline, "the batch never ended after cancel"
        time.sleep(0.5)
    assert status["status"] == "cancelled" and status["counts"] == {"cancelled": 2}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch", "nothing/*.csv", "proc.py"], "matches no file"),
        (["proc.py", "{}"], "needs --batch"),
        (["--batch", "data/*.csv", "--parallel", "0", "proc.py"], "parallel"),
        (["--parallel", "2", "proc.py"], "needs --batch"),
    ],
)
def test_bad_batch_input_is_a_usage_error(
    project: Path, rgrid_env: dict[str, str], args: list[str], message: str
) -> None:
    result = run_cli(["run", *args], project, rgrid_env)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 3


def test_an_input_deleted_after_globbing_submits_nothing(
    project: Path, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project)
    monkeypatch.setenv("RGRID_HOME", str(project / "home"))
    plan = plan_batch("proc.py", "data/*.csv", [], [], project)
    before = {b.id for b in client.list_batches().batches}
    (project / "data" / "b.csv").unlink()
    with pytest.raises(UsageError, match=r"cannot read data/b\.csv"):
        submit_batch(client, plan, JobSpec(), None)
    assert {b.id for b in client.list_batches().batches} == before


def test_cache_replays_a_run_and_reruns_only_changed_inputs(project: Path, rgrid_env: dict[str, str]) -> None:
    token = uuid.uuid4().hex  # content no earlier test ran: the first run is a miss
    (project / "data" / "a.csv").write_text(token)
    (project / "data" / "b.csv").write_text("b" + token)  # every input succeeds
    first = run_cli(["run", "--cache", "--json", "proc.py", "data/a.csv"], project, rgrid_env)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["cached_from"] is None
    (project / "result.txt").unlink()
    replay = run_cli(["run", "--cache", "proc.py", "data/a.csv"], project, rgrid_env)
    assert replay.returncode == 0 and replay.stdout == f"got {token}\n"
    assert (project / "result.txt").read_text() == token * 2
    latest = json.loads(run_cli(["list", "--json", "--limit", "1"], project, rgrid_env).stdout)["executions"][
        0
    ]
    assert latest["cached_from"] == json.loads(first.stdout)["id"]
    assert "reused" in run_cli(["status", latest["id"]], project, rgrid_env).stdout

    batch = ["run", "--cache", "--batch", "data/*.csv", "proc.py"]
    assert run_cli(batch, project, rgrid_env).returncode == 0
    (project / "data" / "b.csv").write_text("changed" + token)
    rerun = json.loads(run_cli([*batch[:1], "-d", "--json", *batch[1:]], project, rgrid_env).stdout)
    by_input = {e["input"]: e["status"] for e in rerun["executions"]}
    assert by_input["data/a.csv"] == "succeeded"  # at creation: nothing ran
    assert by_input["data/b.csv"] in ("queued", "dispatched", "running")


def test_a_scripts_own_batch_flag_is_the_scripts(project: Path, rgrid_env: dict[str, str]) -> None:
    result = run_cli(["run", "--dry-run", "--json", "proc.py", "--batch", "data/*.csv"], project, rgrid_env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["args"] == ["--batch", "data/*.csv"]


def _follow_a_slow_batch(project: Path, rgrid_env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    """A batch the CLI follows in the foreground; returns it and the batch id
    once the CLI said it was submitted."""
    (project / "slow.py").write_text("import time\ntime.sleep(300)\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "rgrid", "run", "--batch", "data/*.csv", "--parallel", "1", "slow.py"],
        cwd=project,
        env=rgrid_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert "batch b-" in line, line
    return proc, line.split("batch ")[1].split(":")[0]


def test_a_followed_batch_that_is_cancelled_exits_130(project: Path, rgrid_env: dict[str, str]) -> None:
    proc, batch_id = _follow_a_slow_batch(project, rgrid_env)
    assert run_cli(["cancel", batch_id], project, rgrid_env).returncode == 0
    _out, err = proc.communicate(timeout=90)
    assert proc.returncode == 130, err
    assert f"batch {batch_id}: 2 inputs, 2 cancelled" in err


def test_ctrl_c_detaches_from_a_batch_and_it_goes_on(project: Path, rgrid_env: dict[str, str]) -> None:
    proc, batch_id = _follow_a_slow_batch(project, rgrid_env)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "detached" in err and f"rgrid wait {batch_id}" in err and f"rgrid cancel {batch_id}" in err
    assert (
        json.loads(run_cli(["status", "--json", batch_id], project, rgrid_env).stdout)["status"] == "running"
    )
    run_cli(["cancel", batch_id], project, rgrid_env)
