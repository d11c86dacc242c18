"""Human units, environment pairs and the exit-code contract."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from rgrid.errors import UsageError, exit_code_for, exit_code_for_batch
from rgrid.units import job_resources, parse_duration_s, parse_env, parse_memory_mb
from rgrid.wire import BatchExecution, BatchStatus, BatchView, ExecutionView, FailureReason, Resources, Status


@pytest.mark.parametrize(
    ("text", "mb"), [("512M", 512), ("2G", 2048), ("2GiB", 2048), ("300", 300), ("1.5g", 1536)]
)
def test_memory(text: str, mb: int) -> None:
    assert parse_memory_mb(text) == mb


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("5m", 300), ("2h", 7200), ("250ms", 0.25)]
)
def test_duration(text: str, seconds: float) -> None:
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize("bad", ["", "lots", "-5", "0"])
def test_bad_values(bad: str) -> None:
    with pytest.raises(UsageError):
        parse_duration_s(bad)
    if bad != "0":
        with pytest.raises(UsageError):
            parse_memory_mb(bad)


def test_env_pairs() -> None:
    assert parse_env(["A=1", "B=x=y", "C="]) == {"A": "1", "B": "x=y", "C": ""}
    for bad in ["A", "1A=2", "=x"]:
        with pytest.raises(UsageError):
            parse_env([bad])


def _view(status: str, reason: str | None = None, code: int | None = None) -> ExecutionView:
    return ExecutionView(
        id="x",
        status=Status(status),
        script="s.py",
        args=[],
        runtime="python",
        resources=Resources(),
        created_at=datetime.now(UTC),
        failure_reason=FailureReason(reason) if reason else None,
        exit_code=code,
    )


@pytest.mark.parametrize(
    ("status", "reason", "code", "expected"),
    [
        ("succeeded", None, 0, 0),
        ("failed", "exit_code", 3, 3),
        ("failed", "timeout", None, 124),
        ("failed", "out_of_memory", 137, 137),
        ("cancelled", "cancelled", None, 130),
        ("failed", "worker_lost", None, 75),
        ("failed", "internal", None, 75),
    ],
)
def test_exit_codes(status: str, reason: str | None, code: int | None, expected: int) -> None:
    assert exit_code_for(_view(status, reason, code)) == expected


@pytest.mark.parametrize(
    ("status", "members", "expected"),
    [
        ("succeeded", [("succeeded", None)], 0),
        ("failed", [("succeeded", None), ("failed", "exit_code")], 1),
        ("failed", [("failed", "timeout"), ("failed", "out_of_memory")], 1),
        ("failed", [("failed", "exit_code"), ("failed", "worker_lost")], 75),
        ("cancelled", [("succeeded", None), ("cancelled", "cancelled")], 130),
    ],
)
def test_batch_exit_codes(status: str, members: list[tuple[str, str | None]], expected: int) -> None:
    batch = BatchView(
        id="b-12345678",
        status=BatchStatus(status),
        script="job.py",
        total=len(members),
        counts={},
        created_at=datetime.now(UTC),
        executions=[
            BatchExecution(id=f"e{i}", input=f"{i}.csv", status=Status(s), failure_reason=r)  # type: ignore[arg-type]
            for i, (s, r) in enumerate(members)
        ],
    )
    assert exit_code_for_batch(batch) == expected


@pytest.mark.parametrize(
    ("cpu", "memory", "timeout", "says"),
    [
        (0.0, "1G", "1h", "invalid --cpu '0': input should be greater than or equal to 0.01"),
        (1000.0, "1G", "1h", "invalid --cpu '1000'"),
        (1.0, "0", "1h", "invalid --memory '0': input should be greater than or equal to 16 (MiB)"),
        (1.0, "5T", "1h", "invalid --memory '5T'"),
        (1.0, "1G", "30d", "invalid --timeout '30d'"),
    ],
)
def test_resources_out_of_range_are_usage_errors(cpu: float, memory: str, timeout: str, says: str) -> None:
    with pytest.raises(UsageError, match="^" + says.replace("(", r"\(").replace(")", r"\)")):
        job_resources(cpu, memory, timeout)


@pytest.mark.parametrize(
    "option", [["--memory", "0"], ["--cpu", "0"], ["--cpu", "999"], ["--retries", "11"], ["--retries", "-1"]]
)
def test_run_with_resources_out_of_range_exits_2(tmp_path: Path, option: list[str]) -> None:
    """Through the CLI, before anything connects: one line, exit 2."""
    (tmp_path / "s.py").write_text("print(1)\n")
    env = {
        "RGRID_HOME": str(tmp_path / "home"),
        "RGRID_API_URL": "http://127.0.0.1:9",
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run(
        [sys.executable, "-m", "rgrid", "run", *option, "s.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and option[0] in lines[0] and "pydantic" not in lines[0], lines


@pytest.mark.parametrize(
    ("status", "reason", "code", "said"),
    [
        ("succeeded", None, 0, "succeeded"),
        ("failed", "exit_code", 3, "failed (exit code 3)"),
        ("failed", "process_limit", 1, "failed (exit code 1, process limit)"),
        ("failed", "timeout", None, "failed: timeout"),
        ("cancelled", "cancelled", None, "cancelled"),
        ("running", None, None, "running"),
    ],
)
def test_one_wording_for_how_a_run_ended(
    status: str, reason: str | None, code: int | None, said: str
) -> None:
    from rgrid.outcome import describe
    from rgrid.wire import FailureReason, Status

    assert describe(Status(status), FailureReason(reason) if reason else None, code) == said


def test_tables_fit_a_narrow_terminal_without_cutting_a_word() -> None:
    import io

    from rich.console import Console

    from rgrid.cli.console import make_table

    table = make_table("id", "status", "script", "created", "took")
    long_script = "process_every_single_sensor_reading_of_the_year.py --input data/stations/north/2026.csv"
    table.add_row("k3x9m2p8q1", "failed (exit code 3)", long_script, "2026-12-06 20:00:45", "12.34 s")
    buffer = io.StringIO()
    Console(file=buffer, width=80, force_terminal=True, color_system=None).print(table)
    lines = buffer.getvalue().splitlines()
    assert all(len(line) <= 80 for line in lines)
    assert "…" not in buffer.getvalue()
    start, end = lines[0].index("script"), lines[0].index("created")
    column = "".join(line[start:end] for line in lines[1:])
    assert "".join(column.split()) == "".join(long_script.split())  # every character, in its column
