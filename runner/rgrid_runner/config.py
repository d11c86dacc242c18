"""A worker process's runner configuration: the settings (`settings.py`)
turned into the objects an attempt uses, built once per worker process."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from rgrid_runner.cgroups import CgroupManager
from rgrid_runner.envs import EnvCache
from rgrid_runner.inputcache import InputCache
from rgrid_runner.jobnet import JobNetwork, job_network
from rgrid_runner.runtimes import Interpreter, detect
from rgrid_runner.sandbox import JobUser, Sandbox, choose
from rgrid_runner.settings import runner_settings


@dataclass(frozen=True)
class RunnerConfig:
    work_root: Path
    sandbox: Sandbox
    cgroups: CgroupManager
    runtimes: dict[str, Interpreter]
    envs: EnvCache
    inputs: InputCache
    jobnet: JobNetwork
    max_pids: int
    max_output_files: int
    max_output_bytes: int
    max_log_bytes: int
    max_workdir_bytes: int


@cache
def runner_config() -> RunnerConfig:
    s = runner_settings()
    root = s.work_dir()
    root.mkdir(parents=True, exist_ok=True)
    # Jobs run as another uid: they may pass through to their own dir, never list others.
    root.chmod(0o711)
    cache_root = s.env_cache or root.parent / f"{root.name}-envs"
    cache_root.mkdir(parents=True, exist_ok=True)
    cache_root.chmod(0o755)
    return RunnerConfig(
        work_root=root,
        sandbox=choose(s.sandbox, JobUser(s.sandbox_uid, s.sandbox_gid)),
        cgroups=CgroupManager(),
        runtimes=detect(),
        envs=EnvCache(cache_root, max_envs=s.env_cache_max),
        inputs=InputCache(s.input_cache or root.parent / f"{root.name}-inputs", s.input_cache_bytes),
        jobnet=job_network(s),
        max_pids=s.max_pids,
        max_output_files=s.max_output_files,
        max_output_bytes=s.max_output_bytes,
        max_log_bytes=s.max_log_bytes,
        max_workdir_bytes=s.max_workdir_bytes,
    )
