"""The runner's settings: every RGRID_* variable a worker process reads, in
one place, read once per process (the node agent passes them to Ray's
workers through the raylet's environment)."""

from __future__ import annotations

import tempfile
from functools import cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from rgrid.wire import MAX_OUTPUT_FILES

GIB = 1024**3
MIB = 1024**2


class RunnerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RGRID_", extra="ignore")

    # Where attempts' work dirs go (default: <tmp>/rgrid-work) and where
    # requirement environments are cached (default: beside it), with the
    # bytes that cache may hold (least recently used environments go first).
    work_root: Path | None = None
    env_cache: Path | None = None
    env_cache_bytes: int = 20 * GIB
    env_cache_files: int = 2_000_000
    # Requirements are built in the job's sandbox within this time; the
    # operator's package index (never a tenant's), else PyPI.
    install_timeout_s: float = 1800.0
    pip_index_url: str | None = None
    # The content-addressed cache of scripts and inputs (default: beside
    # the work root) and its size; least recently used objects go first.
    input_cache: Path | None = None
    input_cache_bytes: int = 10 * GIB

    # bubblewrap | docker | process | auto; and the uids jobs run as: one
    # per concurrent attempt, from job_uid_base (rgrid_runner.slots).
    sandbox: str = "auto"
    job_uid_base: int = 200_000
    job_slots: int = 256

    # Interpreters: `python:3.12=/path,…` names them; runtimes_config is the
    # node agent's detection result, handed on so it runs once per node.
    runtimes: str | None = None
    runtimes_config: str | None = None

    # Set by the node agent: which worker this process belongs to, and the
    # socket of its attempt service (rgrid_runner.attemptservice).
    worker_id: str | None = None
    runner_socket: Path | None = None
    # The unprivileged account Ray runs as on a node started as root
    # (rgrid_runner.rayuser); created on first use.
    ray_user: str = "rgrid-ray"

    # The job network (rgrid_runner.jobnet): the range job namespaces are
    # numbered from (must not overlap the node's networks), what jobs may not
    # reach (default: loopback, link-local, RFC 1918, CGNAT, multicast, ...),
    # ranges an operator allows anyway, the resolvers jobs use (default: the
    # node's), and the Docker sandbox's bridge range.
    job_subnet: str = "10.254.0.0/16"
    job_deny_cidrs: str | None = None
    job_allow_cidrs: str = ""
    job_dns: str | None = None
    job_docker_subnet: str = "10.253.0.0/24"
    # A worker joining a remote grid refuses the unisolated `process` sandbox
    # unless the operator opts in.
    allow_unisolated: bool = False

    max_pids: int = 512
    # The API takes at most MAX_OUTPUT_FILES from one attempt.
    max_output_files: int = Field(default=10_000, ge=0, le=MAX_OUTPUT_FILES)
    max_output_bytes: int = 10 * GIB
    max_log_bytes: int = 64 * MIB
    # Each attempt's work dir is a file system of its own with this room
    # and this many files (rgrid_runner.workdisk).
    max_workdir_bytes: int = 20 * GIB
    max_workdir_inodes: int = 500_000

    def work_dir(self) -> Path:
        return self.work_root or Path(tempfile.gettempdir()) / "rgrid-work"


def runner_variables() -> frozenset[str]:
    """The RGRID_* variables a worker process reads: the only ones a raylet
    (and so every Ray worker) may inherit. Whatever else a node's
    environment holds (its agent's credential, a control server's secrets)
    stays out of Ray's reach."""
    return frozenset(f"RGRID_{name.upper()}" for name in RunnerSettings.model_fields)


@cache
def runner_settings() -> RunnerSettings:
    return RunnerSettings()
