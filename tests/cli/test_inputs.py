"""Argument classification and work-dir layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from rgrid.errors import UsageError
from rgrid.inputs import plan_run


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.py").write_text("print(1)\n")
    return tmp_path


def test_files_mirror_the_current_directory(cwd: Path) -> None:
    (cwd / "data").mkdir()
    (cwd / "data" / "x.csv").write_text("1")
    plan = plan_run("s.py", ["data/x.csv", "./data/x.csv", "5"], [])
    assert plan.args == ["data/x.csv", "data/x.csv", "5"]
    assert [f.remote for f in plan.files] == ["s.py", "data/x.csv"]
    assert [f.remote for f in plan.inputs] == ["data/x.csv"]


def test_files_outside_the_current_directory_get_distinct_places(
    cwd: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    a = tmp_path_factory.mktemp("a") / "data.csv"
    b = tmp_path_factory.mktemp("b") / "data.csv"
    a.write_text("a")
    b.write_text("b")
    plan = plan_run("s.py", [str(a), str(b), f"--in={a}"], [])
    assert plan.args == ["_rgrid/ext/1/data.csv", "_rgrid/ext/2/data.csv", "--in=_rgrid/ext/1/data.csv"]
    assert len(plan.inputs) == 2


def test_flag_values_and_pass_through(cwd: Path) -> None:
    (cwd / "in.txt").write_text("x")
    plan = plan_run("s.py", ["--input=in.txt", "--out=result.txt", "-", "--verbose"], [])
    assert plan.args == ["--input=in.txt", "--out=result.txt", "-", "--verbose"]
    assert [u.files != [] for u in plan.uses] == [True, False, False, False]


def test_directory_is_a_tree(cwd: Path) -> None:
    (cwd / "d" / "e").mkdir(parents=True)
    (cwd / "d" / "1.txt").write_text("1")
    (cwd / "d" / "e" / "2.txt").write_text("2")
    plan = plan_run("s.py", ["d"], [])
    assert sorted(f.remote for f in plan.inputs) == ["d/1.txt", "d/e/2.txt"]
    assert plan.args == ["d"]


def test_missing_script_and_include(cwd: Path) -> None:
    with pytest.raises(UsageError, match="script not found"):
        plan_run("nope.py", [], [])
    with pytest.raises(UsageError, match="not a file"):
        plan_run(".", [], [])
    with pytest.raises(UsageError, match="--include: no such file"):
        plan_run("s.py", [], ["missing.json"])


def test_script_in_subfolder_keeps_its_path(cwd: Path) -> None:
    (cwd / "tools").mkdir()
    (cwd / "tools" / "t.py").write_text("")
    assert plan_run("tools/t.py", [], []).script.remote == "tools/t.py"
