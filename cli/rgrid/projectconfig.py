"""Per-project defaults for `rgrid run`: `[tool.rgrid]` in pyproject.toml,
or an rgrid.toml, in the current folder or the nearest one above it.

A project that always needs 4 CPUs, python:3.12 and its `conf/` folder says
so once instead of on every command line. The command line wins, then the
project's file, then rgrid's own defaults; `--dry-run` shows each value and
where it came from.

    [tool.rgrid]              # or, in rgrid.toml, the same keys at the top
    runtime = "python:3.12"
    cpu = 4
    memory = "8G"
    timeout = "2h"
    include = ["conf"]        # paths relative to the file's folder
    env = ["API_URL=https://example.org", "HF_TOKEN"]   # NAME alone: its value here
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rgrid.errors import UsageError

BUILT_IN: dict[str, Any] = {"runtime": "python", "cpu": 1.0, "memory": "1G", "timeout": "1h"}
KEYS = frozenset({*BUILT_IN, "include", "env"})


@dataclass
class RunOptions:
    """The options a run gets, and where each came from."""

    runtime: str
    cpu: float
    memory: str
    timeout: str
    include: list[str]
    env: list[str]
    sources: dict[str, str] = field(default_factory=dict)

    def where_set(self, message: str) -> str:
        """ " (set in FILE)" when the option an error names came from the
        project's file, so the user looks there and not at the command line."""
        for key, source in self.sources.items():
            if f"--{key}" in message and source not in ("command line", "default"):
                return f" (set in {source})"
        return ""


def find_project_file(start: Path) -> tuple[Path, dict[str, Any]] | None:
    """The nearest rgrid.toml, or pyproject.toml with [tool.rgrid], from
    `start` up; None if there is none."""
    for folder in [start, *start.parents]:
        own = folder / "rgrid.toml"
        if own.is_file():
            return own, _read(own)
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file():
            table = _read(pyproject).get("tool", {}).get("rgrid")
            if table is not None:
                if not isinstance(table, dict):
                    raise UsageError(f"{pyproject}: [tool.rgrid] must be a table")
                return pyproject, table
    return None


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None


def resolve(given: dict[str, Any], cwd: Path) -> RunOptions:
    """Each option from the command line (`given`, None where not given),
    else the project's file, else rgrid's default."""
    found = find_project_file(cwd)
    path, table = found if found else (None, {})
    unknown = sorted(set(table) - KEYS)
    if unknown:
        raise UsageError(
            f"{path}: unknown rgrid setting(s) {', '.join(unknown)}; known: {', '.join(sorted(KEYS))}"
        )
    label = "" if path is None else f"{path} [tool.rgrid]" if path.name == "pyproject.toml" else str(path)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key, default in BUILT_IN.items():
        if given.get(key) is not None:
            values[key], sources[key] = given[key], "command line"
        elif key in table:
            values[key], sources[key] = _checked(path, key, table[key], type(default)), label
        else:
            values[key], sources[key] = default, "default"
    include = [str(_relative(path, p, cwd)) for p in _strings(path, "include", table.get("include", []))]
    env = [_env_entry(path, e) for e in _strings(path, "env", table.get("env", []))]
    for key, extra in (("include", include), ("env", env)):
        if extra:
            sources[key] = label
    return RunOptions(
        runtime=values["runtime"],
        cpu=float(values["cpu"]),
        memory=str(values["memory"]),
        timeout=str(values["timeout"]),
        include=[*include, *given.get("include", [])],
        env=[*env, *given.get("env", [])],
        sources=sources,
    )


def _checked(path: Path | None, key: str, value: Any, kind: type) -> Any:
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind is str and isinstance(value, str | int | float) and not isinstance(value, bool):
        return str(value)
    raise UsageError(f"{path}: {key} = {value!r} is not a {kind.__name__}")


def _strings(path: Path | None, key: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UsageError(f"{path}: {key} must be a list of strings")
    return value


def _relative(path: Path | None, entry: str, cwd: Path) -> Path:
    """An include path as written in the file, from the file's folder."""
    assert path is not None
    full = path.parent / entry
    try:
        return full.relative_to(cwd)
    except ValueError:
        return full


def _env_entry(path: Path | None, entry: str) -> str:
    """NAME=value as written; NAME alone takes its value from here."""
    if "=" in entry:
        return entry
    if entry not in os.environ:
        raise UsageError(f"{path}: env names {entry}, which is not set in this shell")
    return f"{entry}={os.environ[entry]}"
