"""Per-project defaults: the command line wins, then [tool.rgrid] (or
rgrid.toml), then rgrid's own; --dry-run says where each value came from."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rgrid.errors import UsageError
from rgrid.projectconfig import resolve

NOTHING_GIVEN: dict[str, object] = {
    "runtime": None,
    "cpu": None,
    "memory": None,
    "timeout": None,
    "include": [],
    "env": [],
}


def test_without_a_file_rgrids_defaults_apply(tmp_path: Path) -> None:
    options = resolve(NOTHING_GIVEN, tmp_path)
    assert (options.runtime, options.cpu, options.memory, options.timeout) == ("python", 1.0, "1G", "1h")
    assert set(options.sources.values()) == {"default"}


def test_pyproject_then_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.rgrid]\nruntime = "python:3.12"\ncpu = 4\nmemory = "8G"\n'
        'include = ["conf"]\nenv = ["MODE=fast", "TOKEN"]\n'
    )
    monkeypatch.setenv("TOKEN", "from-my-shell")
    sub = tmp_path / "sub"
    sub.mkdir()
    options = resolve({**NOTHING_GIVEN, "cpu": 2.0, "env": ["MODE=slow"]}, sub)  # found from a subfolder
    assert options.cpu == 2.0 and options.sources["cpu"] == "command line"
    assert options.runtime == "python:3.12" and options.memory == "8G"
    assert options.sources["memory"].endswith("pyproject.toml [tool.rgrid]")
    assert options.timeout == "1h" and options.sources["timeout"] == "default"
    assert options.env == ["MODE=fast", "TOKEN=from-my-shell", "MODE=slow"]  # later wins when parsed
    assert options.include == [str(tmp_path / "conf")]


def test_rgrid_toml_and_its_mistakes(tmp_path: Path) -> None:
    (tmp_path / "rgrid.toml").write_text('timeout = "5m"\n')
    assert resolve(NOTHING_GIVEN, tmp_path).timeout == "5m"
    for text, says in [
        ("cpus = 4\n", "unknown rgrid setting(s) cpus"),
        ('cpu = "many"\n', "cpu = 'many' is not a float"),
        ('include = "conf"\n', "include must be a list of strings"),
        ('env = ["NOT_SET_ANYWHERE_RGRID"]\n', "NOT_SET_ANYWHERE_RGRID, which is not set"),
        ("cpu = [\n", "cannot read"),
    ]:
        (tmp_path / "rgrid.toml").write_text(text)
        with pytest.raises(UsageError, match=says.replace("(", r"\(").replace(")", r"\)")):
            resolve(NOTHING_GIVEN, tmp_path)


def test_dry_run_shows_each_value_and_where_it_came_from(tmp_path: Path) -> None:
    (tmp_path / "rgrid.toml").write_text('memory = "2G"\nenv = ["SECRET=hunter2"]\n')
    (tmp_path / "job.py").write_text("print(1)\n")
    done = subprocess.run(
        [sys.executable, "-m", "rgrid", "run", "--dry-run", "--json", "--cpu", "3", "job.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    options = json.loads(done.stdout)["options"]
    assert options["cpu"] == {"value": 3.0, "from": "command line"}
    assert options["memory"] == {"value": "2G", "from": str(tmp_path / "rgrid.toml")}
    assert options["runtime"] == {"value": "python", "from": "default"}
    assert options["env"]["value"] == ["SECRET"] and "hunter2" not in done.stdout
