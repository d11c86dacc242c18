"""The launchers (`rgrid.local.components` for the local grid,
`rgrid_infra` for cloud user data) hand settings to processes by their
environment names. They sit below the settings classes (`rgrid_api`,
`rgrid_runner`), so they cannot import them; this test holds every name
they write to a setting or a variable its reader names, so that renaming
a setting cannot leave a launcher setting a name nobody reads."""

from __future__ import annotations

import ast
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


def _read_names() -> set[str]:
    """Every RGRID_ variable some reader reads."""
    prefix = "RGRID_"
    settings = {prefix + name.upper() for cls in (Settings, RunnerSettings) for name in cls.model_fields}
    agent = {value for name, value in vars(commands).items() if name.startswith("ENV_")}
    return settings | agent | {"RGRID_HOME"}  # rgrid.config.home reads it


def _written_names(path: Path) -> list[tuple[int, str]]:
    """RGRID_ names in a launcher's string literals: a whole name, a
    `NAME=value` line of user data, or a prefix (ending in `_`)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value.split("=", 1)[0]
            if text.startswith("RGRID_"):
                found.append((node.lineno, text))
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
        'ENV = {"RGRID_DATABASE_URI": "x", "RGRID_S3_": "prefix"}\nUSER = "RGRID_API_URL=x"\n'
    )
    assert _unread(launcher, _read_names()) == ["launcher.py:1 RGRID_DATABASE_URI"]
