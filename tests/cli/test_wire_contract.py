"""The wire contract's shared rules: relative paths, runtime resources,
worker states."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from rgrid.wire import (
    ALLOWED_RUNTIMES,
    InputFile,
    RunnerOutputRequest,
    WorkerStatus,
    relative_path,
    resource_name,
    runtime_of_resource,
)

BAD = ["../x", "/etc/passwd", "a/../../x", "", "a\x00b", "a/.."]


@pytest.mark.parametrize("bad", BAD)
def test_one_relative_path_rule(bad: str) -> None:
    with pytest.raises(ValueError):
        relative_path(bad)
    with pytest.raises(ValidationError):
        InputFile(sha256="0" * 64, path=bad)
    with pytest.raises(ValidationError):
        RunnerOutputRequest(paths=[bad])


def test_relative_paths_are_normalised() -> None:
    assert str(relative_path("a//b/./c.txt")) == "a/b/c.txt"
    assert InputFile(sha256="0" * 64, path="./data/x.csv").path == "data/x.csv"


@pytest.mark.parametrize("runtime", ALLOWED_RUNTIMES)
def test_runtime_resources_round_trip(runtime: str) -> None:
    assert runtime_of_resource(resource_name(runtime)) == runtime


def test_other_resources_are_no_runtime() -> None:
    assert runtime_of_resource("CPU") is None
    assert runtime_of_resource("rgrid_worker_local-head") is None


def test_live_worker_states() -> None:
    assert {s for s in WorkerStatus if s.live} == {WorkerStatus.ACTIVE, WorkerStatus.DRAINING}
