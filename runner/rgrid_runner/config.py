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
from rgrid_runner.sandbox import Sandbox, choose
from rgrid_runner.settings import runner_settings
from rgrid_runner.slots import JobSlots
from rgrid_runner.workdisk import DiskLimits, WorkDisks


@dataclass(frozen=True)
class RunnerConfig:
    work_root: Path
    sandbox: Sandbox
    cgroups: CgroupManager
    runtimes: dict[str, Interpreter]
    envs: EnvCache
    inputs: InputCache
    jobnet: JobNetwork
    slots: JobSlots
    install_timeout_s: float
    pip_index_url: str | None
    max_pids: int
    max_output_files: int
    max_output_bytes: int
    max_log_bytes: int
    disks: WorkDisks


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
        sandbox=choose(s.sandbox),
        cgroups=CgroupManager(),
        runtimes=detect(),
        envs=EnvCache(cache_root, max_bytes=s.env_cache_bytes, max_files=s.env_cache_files),
        inputs=InputCache(s.input_cache or root.parent / f"{root.name}-inputs", s.input_cache_bytes),
        jobnet=job_network(s),
        slots=JobSlots(root.parent / f"{root.name}-slots", s.job_uid_base, s.job_slots),
        install_timeout_s=s.install_timeout_s,
        pip_index_url=s.pip_index_url,
        max_pids=s.max_pids,
        max_output_files=s.max_output_files,
        max_output_bytes=s.max_output_bytes,
        max_log_bytes=s.max_log_bytes,
        disks=WorkDisks(
            root.parent / f"{root.name}-disks", DiskLimits(s.max_workdir_bytes, s.max_workdir_inodes)
        ),
    )
