"""The launchers (`rgrid.local.components` for the local grid,
`rgrid_infra` for cloud user data) hand settings to processes by their
environment names. They sit below the settings classes (`rgrid_api`,
`rgrid_runner`), so they cannot import them; this test holds every name
they write to a setting or a variable its reader names, so that renaming
a setting cannot leave a launcher setting a name nobody reads."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import rgrid.local.components
import rgrid_infra
from rgrid_api.settings import Settings
from rgrid_runner import commands
from rgrid_runner.settings import RunnerSettings

LAUNCHERS = [
    Path(rgrid.local.components.__file__),
    *sorted(Path(rgrid_infra.__file__).parent.rglob("*.py")),
]


# Read by the systemd units themselves (`--node-ip-address=${RGRID_PRIVATE_IP}`).
READ_BY_UNITS = {"RGRID_PRIVATE_IP"}
NAME = re.compile(r"RGRID_[A-Z0-9_]+")


def _read_names() -> set[str]:
    """Every RGRID_ variable some reader reads."""
    prefix = "RGRID_"
    settings = {prefix + name.upper() for cls in (Settings, RunnerSettings) for name in cls.model_fields}
    agent = {value for name, value in vars(commands).items() if name.startswith("ENV_")}
    return settings | agent | READ_BY_UNITS | {"RGRID_HOME"}  # rgrid.config.home reads it


def _written_names(path: Path) -> list[tuple[int, str]]:
    """RGRID_ names anywhere in a launcher's strings (a whole name, a
    `NAME=value` line of user data or of a heredoc, a shell `$NAME`, or a
    prefix ending in `_`) and in keyword arguments (`env.update(NAME=...)`)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found += [(node.lineno, name) for name in NAME.findall(node.value)]
        elif isinstance(node, ast.keyword) and node.arg and NAME.fullmatch(node.arg):
            found.append((node.lineno, node.arg))
    return found


def _unread(path: Path, read: set[str]) -> list[str]:
    return [
        f"{path.name}:{line} {name}"
        for line, name in _written_names(path)
        if name not in read and not (name.endswith("_") and any(r.startswith(name) for r in read))
    ]


def test_every_name_a_launcher_writes_is_read() -> None:
    read = _read_names()
    assert "RGRID_DATABASE_URL" in read and "RGRID_CREDENTIAL_FILE" in read
    unread = [entry for path in LAUNCHERS for entry in _unread(path, read)]
    assert unread == []


def test_a_renamed_setting_is_caught(tmp_path: Path) -> None:
    launcher = tmp_path / "launcher.py"
    launcher.write_text(
        'ENV = {"RGRID_DATABASE_URI": "x", "RGRID_S3_": "prefix"}\n'
        'USER = f"RGRID_API_URL={1}\\necho RGRID_PROVIDR=x >> node.env"\n'
        "env.update(RGRID_WORK_ROT='/w')\n"
    )
    assert _unread(launcher, _read_names()) == [
        "launcher.py:1 RGRID_DATABASE_URI",
        "launcher.py:2 RGRID_PROVIDR",
        "launcher.py:3 RGRID_WORK_ROT",
    ]
