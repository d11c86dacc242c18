"""The script's own modules travel with it: what it imports from its folder,
transitively, and nothing of the standard library or installed packages."""

from __future__ import annotations

from pathlib import Path

from rgrid.batchplan import plan_batch
from rgrid.inputs import plan_run
from rgrid.localimports import local_imports


def write(folder: Path, name: str, text: str = "") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_modules_and_packages_beside_the_script_are_found_transitively(tmp_path: Path) -> None:
    script = write(
        tmp_path,
        "main.py",
        "import os, json\nimport helper\nfrom pkg import sub\nfrom pkg.deep import thing\n"
        "import numpy_not_installed_here\n",
    )
    write(tmp_path, "helper.py", "from util import f\n")
    write(tmp_path, "util.py", "def f(): pass\n")
    write(tmp_path, "pkg/__init__.py")
    write(tmp_path, "pkg/sub.py", "from . import sibling\nfrom .. import top\n")
    write(tmp_path, "pkg/sibling.py")
    write(tmp_path, "pkg/deep/__init__.py", "from .inner import thing\n")
    write(tmp_path, "pkg/deep/inner.py", "thing = 1\n")
    write(tmp_path, "top.py")
    write(tmp_path, "unused.py")
    found = local_imports(script)
    names = sorted(p.relative_to(tmp_path).as_posix() for p in found.files)
    assert names == [
        "helper.py",
        "pkg/__init__.py",
        "pkg/deep/__init__.py",
        "pkg/deep/inner.py",
        "pkg/sibling.py",
        "pkg/sub.py",
        "top.py",
        "util.py",
    ]
    assert found.notes == []


def test_a_module_that_cannot_be_parsed_is_skipped_with_a_note(tmp_path: Path) -> None:
    script = write(tmp_path, "main.py", "import broken\nimport fine\n")
    write(tmp_path, "broken.py", "print 'python 2'\nimport hidden\n")
    write(tmp_path, "fine.py")
    write(tmp_path, "hidden.py")
    found = local_imports(script)
    assert [p.name for p in found.files] == ["broken.py", "fine.py"]  # shipped, its imports not followed
    assert len(found.notes) == 1 and "broken.py" in found.notes[0]


def test_imports_inside_functions_and_try_blocks_count(tmp_path: Path) -> None:
    script = write(
        tmp_path,
        "main.py",
        "def go():\n    import lazy\ntry:\n    import maybe\nexcept ImportError:\n    pass\n",
    )
    write(tmp_path, "lazy.py")
    write(tmp_path, "maybe.py")
    assert sorted(p.name for p in local_imports(script).files) == ["lazy.py", "maybe.py"]


def test_the_plan_ships_them_beside_the_script_and_can_be_turned_off(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    write(tmp_path, "tools/job.py", "import helper\n")
    write(tmp_path, "tools/helper.py")
    monkeypatch.chdir(tmp_path)
    plan = plan_run("tools/job.py", [], [])
    assert [m.remote for m in plan.modules] == ["tools/helper.py"]
    assert "tools/helper.py" in {f.remote for f in plan.inputs}
    off = plan_run("tools/job.py", [], [], auto_include=False)
    assert off.modules == [] and off.inputs == []


def test_a_script_outside_the_current_folder_keeps_its_modules_beside_it(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    script = write(elsewhere, "job.py", "import helper\n")
    write(elsewhere, "helper.py")
    project = tmp_path / "project"
    project.mkdir()
    plan = plan_run(str(script), [], [], cwd=project)
    folder = plan.script.remote.rsplit("/", 1)[0]
    assert [m.remote for m in plan.modules] == [f"{folder}/helper.py"]


def test_a_batch_shares_the_modules_once(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "job.py", "import helper\n")
    write(tmp_path, "helper.py")
    write(tmp_path, "data/a.csv", "1\n")
    write(tmp_path, "data/b.csv", "2\n")
    plan = plan_batch("job.py", "data/*.csv", ["{}"], [], tmp_path)
    assert [m.remote for m in plan.modules] == ["helper.py"]
    assert "helper.py" in {f.remote for f in plan.shared}
    assert all(f.remote != "helper.py" for i in plan.inputs for f in i.files)
