"""Runtimes: which Python versions a job may ask for, and where a worker
finds them.

A worker advertises each runtime it can run to Ray as a custom resource
(named by `rgrid.wire.resource_name`), and every attempt asks for its
runtime's resource, so Ray only places it on a node that has that interpreter.
RGRID_RUNTIMES (`python:3.12=/opt/py312/bin/python3,…`) names interpreters
explicitly; otherwise real interpreters on PATH and pyenv installs are found
and verified by running them.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass

from rgrid.wire import ALLOWED_RUNTIMES, RUNTIME_ADVERTISED_AMOUNT, resource_name
from rgrid_runner.settings import runner_settings


@dataclass(frozen=True)
class Interpreter:
    runtime: str
    executable: str
    prefix: str  # sys.base_prefix: the tree a sandbox must show the job
    # Exactly which Python, for provenance: "CPython 3.11.2".
    version: str = ""


def _probe(executable: str, runtime: str) -> Interpreter | None:
    code = (
        "import platform, sys; print(sys.base_prefix); print('%d.%d' % sys.version_info[:2]);"
        " print(platform.python_implementation(), platform.python_version())"
    )
    try:
        out = subprocess.run([executable, "-I", "-c", code], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = out.stdout.splitlines()
    if out.returncode != 0 or len(lines) != 3 or f"python:{lines[1]}" != runtime:
        return None
    return Interpreter(runtime, os.path.realpath(executable), lines[0], lines[2])


def _candidates(version: str) -> list[str]:
    found = []
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        if "shims" in directory:  # pyenv shims are launchers, not interpreters
            continue
        path = shutil.which(f"python{version}", path=directory)
        if path:
            found.append(path)
    pyenv_root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    found += sorted(glob.glob(f"{pyenv_root}/versions/{version}.*/bin/python{version}"), reverse=True)
    found += [f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"]
    return [p for p in dict.fromkeys(found) if os.path.exists(p)]


def detect() -> dict[str, Interpreter]:
    settings = runner_settings()
    configured = settings.runtimes_config
    if configured:
        return {k: Interpreter(**v) for k, v in json.loads(configured).items()}
    explicit = settings.runtimes
    found: dict[str, Interpreter] = {}
    if explicit:
        for item in explicit.split(","):
            runtime, _, executable = item.strip().partition("=")
            interp = _probe(executable, runtime)
            if interp is None:
                raise RuntimeError(f"RGRID_RUNTIMES: {executable} is not {runtime}")
            found[runtime] = interp
        return found
    for runtime in ALLOWED_RUNTIMES:
        version = runtime.split(":")[1]
        for candidate in _candidates(version):
            interp = _probe(candidate, runtime)
            if interp is not None:
                found[runtime] = interp
                break
    return found


def encode(found: dict[str, Interpreter]) -> str:
    """For RGRID_RUNTIMES_CONFIG: detection runs once per node, not per task."""
    return json.dumps({k: asdict(v) for k, v in found.items()})


def ray_resources(found: dict[str, Interpreter]) -> dict[str, float]:
    return {resource_name(r): RUNTIME_ADVERTISED_AMOUNT for r in found}
