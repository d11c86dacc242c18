"""state.json through its model (`rgrid.local.state`): what an earlier
rgrid wrote still reads, what a newer one added survives a save, a damaged
value costs only itself, and a file that is no state at all is one line
that says what to do, never a traceback."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from rgrid.errors import RgridError
from rgrid.local.grid import LocalGrid, describe_workers, healthy
from rgrid.local.state import LocalGridState, Piece, SupervisorRecord

# As the dict-shaped supervisor wrote it before the model, plus a field
# from some later version.
WRITTEN_BEFORE: dict[str, Any] = {
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
    if written is not None:
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
        json.dumps(["a", "list"]),
        "[" * 100_000 + "]" * 100_000,
    ],
)
def test_a_file_that_is_no_state_is_one_line_that_names_it(tmp_path: Path, written: str) -> None:
    grid = grid_with(tmp_path, None)
    grid.state_path.write_text(written)
    with pytest.raises(RgridError) as refused:
        grid.read_state()
    message = str(refused.value)
    assert "\n" not in message
    assert str(grid.state_path) in message and "then remove it" in message


def test_a_damaged_value_reads_as_its_default_and_down_still_finds_every_pid(tmp_path: Path) -> None:
    """A hand edit or a newer rgrid's change of type costs that value, not
    the grid: the pieces whose pids still read are still stopped."""
    damaged = {
        **WRITTEN_BEFORE,
        "workers": "many",
        "pieces": {
            "api": {**WRITTEN_BEFORE["pieces"]["api"], "restarts": None, "ports": "gone"},
            "ray": "not a piece",
            "s3": {"pid": "x", "ports": {"s3": 9000}},
        },
        "supervisor": {"pid": "?"},
    }
    state = grid_with(tmp_path, damaged).read_state()
    assert state.workers == 0 and state.supervisor is None
    assert set(state.pieces) == {"api", "s3"}
    api = state.pieces["api"]
    assert (api.pid, api.restarts, api.ports, api.last_reason) == (4242, 0, {}, "killed by SIGKILL")
    assert state.pid_of("s3") is None


def test_a_damaged_required_field_drops_its_record_and_saves_again(tmp_path: Path) -> None:
    grid = grid_with(tmp_path, {**WRITTEN_BEFORE, "supervisor": {"pid": "x", "started_at": 1.0}})
    state = grid.read_state()
    assert state.supervisor is None
    grid.save_state(state)
    assert grid.read_state().pieces["api"].pid == 4242


def test_down_stops_what_is_recorded_beyond_a_damaged_worker_count(tmp_path: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        grid = grid_with(
            tmp_path,
            {"workers": "two", "pieces": {"worker-1": {"pid": sleeper.pid, "ports": {}}}},
        )
        assert grid.stop_order(grid.read_state()) == ["worker-1", "ray", "api", "s3"]
        grid.down()
        assert sleeper.wait(timeout=30) is not None
        assert grid.read_state().pieces == {}
    finally:
        sleeper.kill()


def test_a_piece_without_its_ports_is_not_running_rather_than_a_crash(tmp_path: Path) -> None:
    grid = grid_with(tmp_path, {"pieces": {"api": {"pid": None}, "ray": {"pid": None, "ports": {"gcs": 1}}}})
    assert grid.dashboard_url() is None
    assert {p.name: p.url for p in grid.status()} == {"ray": None, "api": None, "s3": None}
    with pytest.raises(RgridError, match="not running"):
        grid.target()
    assert not healthy("api", grid.read_state().pieces["api"])


def test_a_wrong_assignment_in_code_is_still_refused() -> None:
    piece = Piece()
    with pytest.raises(ValueError, match="pid"):
        piece.pid = "not a pid"  # type: ignore[assignment]
