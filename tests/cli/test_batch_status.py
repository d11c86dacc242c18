"""`rgrid status BATCH` of a large batch: its counts and the inputs that did
not succeed, not a row per input (5,000 rows took Rich seconds to draw);
every input with --all; a small batch whole."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from rgrid.cli.inspect import WHOLE_BATCH_ROWS, show_batch
from rgrid.wire import BatchExecution, BatchStatus, BatchView, FailureReason, Status


def _batch(total: int) -> BatchView:
    executions = [
        BatchExecution(id=f"e{n:04d}", input=f"data/{n}.csv", status=Status.SUCCEEDED, exit_code=0)
        for n in range(total)
    ]
    executions[7] = BatchExecution(
        id="e0007",
        input="data/7.csv",
        status=Status.FAILED,
        exit_code=3,
        failure_reason=FailureReason.EXIT_CODE,
    )
    return BatchView(
        id="b-big",
        status=BatchStatus.FAILED,
        script="proc.py",
        total=total,
        counts={"succeeded": total - 1, "failed": 1},
        created_at=datetime(2026, 12, 6, tzinfo=UTC),
        finished_at=datetime(2026, 12, 6, 0, 5, tzinfo=UTC),
        executions=executions,
    )


def _notable(batch: BatchView) -> BatchView:
    """What the server answers `rgrid status` for a large batch
    (`notable=true&limit=20`)."""
    kept = [e for e in batch.executions if e.status not in (Status.SUCCEEDED, Status.QUEUED)]
    return batch.model_copy(update={"executions": kept[:WHOLE_BATCH_ROWS]})


def test_a_large_batch_shows_its_counts_and_failures_only(capsys: pytest.CaptureFixture[str]) -> None:
    show_batch(_notable(_batch(5000)), all_rows=False)
    shown = capsys.readouterr().out
    assert "5000/5000 done" in shown and "4999 succeeded" in shown
    assert "data/7.csv" in shown and "data/8.csv" not in shown
    assert "4999 more not shown (succeeded, queued, or past the first 20): rgrid status b-big --all" in shown
    assert len(shown.splitlines()) < 20


def test_the_inputs_shown_are_capped_however_many_failed(capsys: pytest.CaptureFixture[str]) -> None:
    batch = _batch(1000)
    batch.executions = [e.model_copy(update={"status": Status.CANCELLED}) for e in batch.executions]
    show_batch(_notable(batch), all_rows=False)
    shown = capsys.readouterr().out
    assert "data/19.csv" in shown and "data/20.csv" not in shown
    assert "980 more not shown" in shown


def test_all_shows_every_input_and_a_small_batch_is_shown_whole(capsys: pytest.CaptureFixture[str]) -> None:
    show_batch(_batch(50), all_rows=True)
    shown = capsys.readouterr().out
    assert all(f"data/{n}.csv" in shown for n in range(50)) and "not shown" not in shown
    show_batch(_batch(WHOLE_BATCH_ROWS), all_rows=False)
    shown = capsys.readouterr().out
    assert all(f"data/{n}.csv" in shown for n in range(WHOLE_BATCH_ROWS)) and "not shown" not in shown
