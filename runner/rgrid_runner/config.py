"""A worker's runner configuration: read once per worker process from the
environment the node agent gave Ray (RGRID_* variables), with defaults."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from rgrid_runner.cgroups import CgroupManager
from rgrid_runner.envs import EnvCache
from rgrid_runner.runtimes import Interpreter, detect
from rgrid_runner.sandbox import Sandbox, choose

GIB = 1024**3
MIB = 1024**2


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


@dataclass(frozen=True)
class RunnerConfig:
    work_root: Path
    sandbox: Sandbox
    cgroups: CgroupManager
    runtimes: dict[str, Interpreter]
    envs: EnvCache
    max_pids: int
    max_output_files: int
    max_output_bytes: int
    max_log_bytes: int
    max_workdir_bytes: int


@cache
def runner_config() -> RunnerConfig:
    root = Path(os.environ.get("RGRID_WORK_ROOT") or Path(tempfile.gettempdir()) / "rgrid-work")
    root.mkdir(parents=True, exist_ok=True)
    # Jobs run as another uid: they may pass through to their own dir, never list others.
    root.chmod(0o711)
    cache_root = Path(os.environ.get("RGRID_ENV_CACHE") or root.parent / f"{root.name}-envs")
    cache_root.mkdir(parents=True, exist_ok=True)
    cache_root.chmod(0o755)
    return RunnerConfig(
        work_root=root,
        sandbox=choose(),
        cgroups=CgroupManager(),
        runtimes=detect(),
        envs=EnvCache(cache_root, max_envs=_int("RGRID_ENV_CACHE_MAX", 20)),
        max_pids=_int("RGRID_MAX_PIDS", 512),
        max_output_files=_int("RGRID_MAX_OUTPUT_FILES", 10_000),
        max_output_bytes=_int("RGRID_MAX_OUTPUT_BYTES", 10 * GIB),
        max_log_bytes=_int("RGRID_MAX_LOG_BYTES", 64 * MIB),
        max_workdir_bytes=_int("RGRID_MAX_WORKDIR_BYTES", 20 * GIB),
    )
