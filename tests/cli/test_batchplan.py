"""Planning a batch on the laptop: what the glob matches, each input's
arguments, what is shared, and output folders that never collide."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from rgrid.batchplan import item_args, matches, output_folders, plan_batch
from rgrid.errors import UsageError


def test_the_input_replaces_the_placeholder_or_is_appended() -> None:
    assert item_args(["--in={}", "-v", "{}"], "a.csv") == ["--in=a.csv", "-v", "a.csv"]
    assert item_args(["-v"], "a.csv") == ["-v", "a.csv"]


def test_the_glob_matches_files_only_in_order_with_recursion(tmp_path: Path) -> None:
    (tmp_path / "data" / "sub").mkdir(parents=True)
    for name in ("data/b.csv", "data/a.csv", "data/sub/c.csv", "data/notes.txt"):
        (tmp_path / name).write_text("x")
    (tmp_path / "data" / "dir.csv").mkdir()
    assert matches("data/*.csv", tmp_path) == ["data/a.csv", "data/b.csv"]
    assert matches("data/**/*.csv", tmp_path) == ["data/a.csv", "data/b.csv", "data/sub/c.csv"]
    with pytest.raises(UsageError, match="matches no file"):
        matches("nothing/*.csv", tmp_path)


def test_shared_files_go_once_and_each_input_only_to_its_execution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "job.py").write_text("print(1)\n")
    (tmp_path / "lookup.txt").write_text("k\n")
    (tmp_path / "data").mkdir()
    for name in ("a.csv", "b.csv"):
        (tmp_path / "data" / name).write_text(name)
    plan = plan_batch("job.py", "data/*.csv", ["lookup.txt", "{}"], [], tmp_path)
    assert [f.remote for f in plan.shared] == ["lookup.txt"]
    assert [(i.label, [f.remote for f in i.files], i.args) for i in plan.inputs] == [
        ("data/a.csv", ["data/a.csv"], ["lookup.txt", "data/a.csv"]),
        ("data/b.csv", ["data/b.csv"], ["lookup.txt", "data/b.csv"]),
    ]
    assert len(plan.files) == 4


def test_output_folders_never_collide_nor_nest() -> None:
    labels = ["data/a.csv", "data/a.json", "data/b.csv", "data/b/c.csv", "README", "../x/a.csv", "../y/a.csv"]
    folders = output_folders(labels)
    assert folders["data/b/c.csv"] == "data/b/c"
    assert folders["README"] == "README"
    assert folders["data/a.csv"] == "data/a.csv" and folders["data/a.json"] == "data/a.json"
    assert folders["data/b.csv"] == "data/b.csv"  # data/b is another input's parent folder
    assert len(set(folders.values())) == len(labels)
    values = sorted(folders.values())
    for f in values:
        assert not f.startswith("/") and ".." not in f.split("/")
        assert not any(g.startswith(f + "/") for g in values if g != f)


@pytest.mark.slow
def test_ten_thousand_inputs_plan_in_bounded_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "job.py").write_text("print(1)\n")
    (tmp_path / "d").mkdir()
    for i in range(10_000):
        (tmp_path / "d" / f"{i:05d}.csv").write_text(str(i))
    tracemalloc.start()
    try:
        plan = plan_batch("job.py", "d/*.csv", ["{}"], [], tmp_path)
        folders = output_folders([i.label for i in plan.inputs])
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(plan.inputs) == 10_000 and len(set(folders.values())) == 10_000
    assert peak < 64 * 1024 * 1024, f"planning took {peak / 2**20:.0f} MiB"
