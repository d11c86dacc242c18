"""state.json through its model (`rgrid.local.state`): what an earlier
rgrid wrote still reads, what a newer one added survives a save, and a
damaged file is one line that says what to do, never a traceback."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from rgrid.errors import RgridError
from rgrid.local.grid import LocalGrid, describe_workers
from rgrid.local.state import LocalGridState, Piece, SupervisorRecord

# As the dict-shaped supervisor wrote it before the model, plus a field
# from some later version.
WRITTEN_BEFORE = {
    "workers": 2,
    "database_url": None,
    "settings": {"RGRID_MAX_QUEUED": "50"},
    "ports": {"api": {"api": 8123}, "ray": {"gcs": 6380, "dashboard": 8266}},
    "pieces": {
        "api": {
            "pid": 4242,
            "ports": {"api": 8123},
            "started_at": 1.5,
            "restarts": 1,
            "last_reason": "killed by SIGKILL",
            "last_crash_at": 1.0,
            "next_start_in_s": 0.0,
        },
        "s3": {"pid": None, "ports": {"s3": 9000}, "restarts": 3, "last_reason": "exited"},
    },
    "supervisor": {"pid": 4000, "started_at": 0.5},
    "a_later_field": {"kept": True},
}


def grid_with(tmp_path: Path, written: object) -> LocalGrid:
    grid = LocalGrid(tmp_path)
    grid.dir.mkdir(parents=True)
    grid.state_path.write_text(json.dumps(written))
    return grid


def test_what_an_earlier_rgrid_wrote_reads_as_the_model(tmp_path: Path) -> None:
    state = grid_with(tmp_path, WRITTEN_BEFORE).read_state()
    assert state.workers == 2 and state.max_workers == 0 and state.database_url is None
    assert state.pieces["api"] == Piece(
        pid=4242,
        ports={"api": 8123},
        started_at=1.5,
        restarts=1,
        last_reason="killed by SIGKILL",
        last_crash_at=1.0,
        next_start_in_s=0.0,
    )
    assert state.pid_of("s3") is None and state.pieces["s3"].restarts == 3
    assert state.pid_of("ray") is None  # never started
    assert state.supervisor == SupervisorRecord(pid=4000, started_at=0.5)
    assert describe_workers(state) == "2 worker nodes beside the head"


def test_a_save_keeps_every_field_and_the_file_private(tmp_path: Path) -> None:
    grid = grid_with(tmp_path, WRITTEN_BEFORE)
    state = grid.read_state()
    state.pieces["api"].restarts += 1
    state.supervisor = None
    grid.save_state(state)
    saved = json.loads(grid.state_path.read_text())
    assert saved["a_later_field"] == {"kept": True}
    assert saved["pieces"]["api"]["restarts"] == 2 and saved["supervisor"] is None
    assert saved["ports"] == WRITTEN_BEFORE["ports"]
    assert stat.S_IMODE(grid.state_path.stat().st_mode) == 0o600
    assert grid.read_state().pieces["api"].restarts == 2


def test_no_file_is_a_grid_never_started(tmp_path: Path) -> None:
    grid = LocalGrid(tmp_path)
    assert grid.read_state() == LocalGridState()
    assert grid.supervisor_pid() is None and not grid.running()
    assert [p.state for p in grid.status()] == ["stopped"] * 3
    with pytest.raises(RgridError, match="rgrid local up"):
        grid.target()


@pytest.mark.parametrize(
    "written",
    [
        "{not json",
        json.dumps({"workers": "many"}),
        json.dumps({"pieces": {"api": {"pid": "x", "ports": {}}}}),
        json.dumps(["a", "list"]),
    ],
)
def test_a_damaged_file_is_one_line_that_names_it(tmp_path: Path, written: str) -> None:
    grid = LocalGrid(tmp_path)
    grid.dir.mkdir(parents=True)
    grid.state_path.write_text(written)
    with pytest.raises(RgridError) as refused:
        grid.read_state()
    message = str(refused.value)
    assert "\n" not in message
    assert str(grid.state_path) in message and "remove it to start afresh" in message


def test_a_wrong_assignment_is_refused_where_it_is_made() -> None:
    piece = Piece()
    with pytest.raises(ValueError, match="pid"):
        piece.pid = "not a pid"  # type: ignore[assignment]
