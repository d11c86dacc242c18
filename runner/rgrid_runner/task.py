"""The Ray task that executes one attempt of one execution on a worker.

The task carries only a ticket (ids, API URL, attempt token). The spec and
fresh presigned URLs are fetched at start, which is also the fencing check:
if this attempt is no longer current the task ends without running anything.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from rgrid.wire import (
    FailureReason,
    OutputFile,
    RunnerLogLine,
    RunnerResult,
    RunnerSpec,
    RunnerStart,
)
from rgrid_runner.cgroups import Cgroup, Limits
from rgrid_runner.config import RunnerConfig, runner_config
from rgrid_runner.envs import InstallFailed
from rgrid_runner.lifeline import ensure_lifeline
from rgrid_runner.limits import LogBudget, WorkdirWatch, rlimit_command
from rgrid_runner.logship import LogShipper
from rgrid_runner.process import ProcessOutcome, run_supervised
from rgrid_runner.reporter import Reporter, StaleAttempt
from rgrid_runner.sandbox import Job
from rgrid_runner.workdir import (
    OutputLimitExceeded,
    OutputLimits,
    changed_files,
    fetch,
    make_workdir,
    remove_workdir,
    snapshot,
    upload,
)

log = logging.getLogger(__name__)

RENEW_S = 1.0
MIB = 1024 * 1024
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True)
class AttemptTicket:
    execution_id: str
    attempt: int
    api_url: str
    token: str


def ray_node_id() -> str | None:
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - outside Ray (tests) there is no node id
        return None


def runner_start() -> RunnerStart:
    """Who runs this attempt: the node agent's worker id (from the raylet's
    environment) and Ray's node id."""
    worker_id = os.environ.get("RGRID_WORKER_ID")
    return RunnerStart(
        worker=worker_id or socket.gethostname(), worker_id=worker_id, ray_node_id=ray_node_id()
    )


def job_env(spec: RunnerSpec, path: str) -> dict[str, str]:
    """The script's whole environment: nothing of the runner's own (no
    credentials), plus the user's --env values."""
    env = {
        "PATH": path,
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "PYTHONUNBUFFERED": "1",
        "RGRID_EXECUTION_ID": spec.execution_id,
    }
    env.update(spec.env)
    return env


def run_attempt(ticket: AttemptTicket) -> str:
    ensure_lifeline()
    reporter = Reporter(ticket.api_url, ticket.execution_id, ticket.attempt, ticket.token)
    try:
        spec = reporter.start(runner_start())
    except StaleAttempt:
        reporter.close()
        return "stale"
    cfg = runner_config()
    workdir = make_workdir(cfg.work_root, spec.execution_id, spec.attempt)
    try:
        return _execute(cfg, reporter, spec, workdir)
    except StaleAttempt:
        log.warning("attempt %d of %s was superseded", spec.attempt, spec.execution_id)
        return "stale"
    finally:
        remove_workdir(workdir)
        reporter.close()


@contextlib.contextmanager
def _cgroup(cfg: RunnerConfig, spec: RunnerSpec) -> Iterator[Cgroup | None]:
    if not cfg.cgroups.available:
        yield None
        return
    limits = Limits(
        memory_bytes=spec.resources.memory_mb * MIB, cpu=spec.resources.cpu, max_pids=cfg.max_pids
    )
    group = cfg.cgroups.create(f"{spec.execution_id}-{spec.attempt}", limits)
    try:
        yield group
    finally:
        group.remove()


def _execute(cfg: RunnerConfig, reporter: Reporter, spec: RunnerSpec, workdir: Path) -> str:
    interp = cfg.runtimes.get(spec.runtime)
    if interp is None:
        return _finish(
            reporter,
            spec,
            127,
            FailureReason.RUNTIME_UNAVAILABLE,
            0.0,
            [],
            f"rgrid: runtime {spec.runtime} is not installed on this worker\n",
        )
    with httpx.Client(timeout=60.0) as http:
        fetch(http, workdir, [spec.script, *spec.inputs])
        before = snapshot(workdir)
        with LogShipper(reporter, RENEW_S) as shipper, contextlib.ExitStack() as stack:
            note = lambda text: shipper.write("stderr", text)  # noqa: E731
            python, readonly, path = interp.executable, [Path(interp.prefix)], SYSTEM_PATH
            path = f"{Path(interp.executable).parent}:{path}"
            if spec.requirements:
                try:
                    env = stack.enter_context(cfg.envs.use(interp, spec.requirements, note))
                except InstallFailed as exc:
                    note(f"rgrid: {exc}\n")
                    shipper.close()
                    return _finish(reporter, spec, 1, FailureReason.DEPENDENCY_INSTALL, 0.0, [])
                python, path = env.python, f"{env.bin}:{path}"
                readonly.append(env.path)
            cfg.sandbox.prepare(workdir)
            job = Job(
                argv=[python, spec.script.path, *spec.args],
                workdir=workdir,
                env=job_env(spec, path),
                readonly=readonly,
                network=spec.network,
                cpu=spec.resources.cpu,
                memory_bytes=spec.resources.memory_mb * MIB,
                max_pids=cfg.max_pids,
                name=f"rgrid-{spec.execution_id}-{spec.attempt}",
                image=f"python:{spec.runtime.split(':')[-1]}-slim",
            )
            launch = cfg.sandbox.launch(job)
            group = stack.enter_context(_cgroup(cfg, spec))
            argv = group.join_command(launch.argv) if group else rlimit_command(launch.argv, job)
            budget = LogBudget(cfg.max_log_bytes, shipper.write)
            watch = WorkdirWatch(workdir, cfg.max_workdir_bytes)
            outcome = run_supervised(
                argv,
                launch.cwd,
                launch.env,
                spec.resources.timeout_s,
                budget.write,
                shipper.stop_requested,
                check=lambda: budget.exceeded() or watch.exceeded(),
            )
            oom = group.oom_killed() if group else False
            pids_hit = group.hit_pid_limit() if group else False
            if shipper.stale.is_set():
                raise StaleAttempt("superseded while running")
            reason = _failure_reason(outcome, shipper.cancel_requested.is_set(), oom, pids_hit)
            explain = _explanation(reason, outcome, spec, cfg)
            if explain:
                note(explain)
        outputs: list[OutputFile] = []
        if reason in (None, FailureReason.EXIT_CODE):
            try:
                outputs = _upload_outputs(http, reporter, workdir, before, cfg)
            except OutputLimitExceeded as exc:
                reporter.logs([RunnerLogLine(stream="stderr", data=f"rgrid: {exc}\n")])
                reason = FailureReason.OUTPUT_TOO_LARGE
    return _finish(reporter, spec, outcome.exit_code, reason, outcome.duration_s, outputs)


def _finish(
    reporter: Reporter,
    spec: RunnerSpec,
    exit_code: int | None,
    reason: FailureReason | None,
    duration_s: float,
    outputs: list[OutputFile],
    message: str | None = None,
) -> str:
    if message:
        reporter.logs([RunnerLogLine(stream="stderr", data=message)])
    reporter.complete(
        RunnerResult(exit_code=exit_code, failure_reason=reason, duration_s=duration_s, outputs=outputs)
    )
    return reason or "ok"


def _failure_reason(
    outcome: ProcessOutcome, cancelled: bool, oom: bool, pids_hit: bool
) -> FailureReason | None:
    if cancelled:
        return FailureReason.CANCELLED
    if outcome.timed_out:
        return FailureReason.TIMEOUT
    if oom:
        return FailureReason.OUT_OF_MEMORY
    if outcome.limit is not None:
        return FailureReason.OUTPUT_TOO_LARGE
    if outcome.exit_code != 0:
        return FailureReason.PROCESS_LIMIT if pids_hit else FailureReason.EXIT_CODE
    return None


def _explanation(
    reason: FailureReason | None, outcome: ProcessOutcome, spec: RunnerSpec, cfg: RunnerConfig
) -> str | None:
    """One line from rgrid in the job's stderr saying why it was stopped."""
    if reason == FailureReason.TIMEOUT:
        return f"rgrid: killed after the {spec.resources.timeout_s:g} s timeout\n"
    if reason == FailureReason.OUT_OF_MEMORY:
        return f"rgrid: killed for exceeding its memory limit ({spec.resources.memory_mb} MiB)\n"
    if reason == FailureReason.OUTPUT_TOO_LARGE:
        return f"rgrid: stopped: {outcome.limit}\n"
    if reason == FailureReason.PROCESS_LIMIT:
        return f"rgrid: the script hit the process limit ({cfg.max_pids} processes)\n"
    return None


def _upload_outputs(
    http: httpx.Client,
    reporter: Reporter,
    workdir: Path,
    before: dict[str, tuple[int, int]],
    cfg: RunnerConfig,
) -> list[OutputFile]:
    limits = OutputLimits(max_files=cfg.max_output_files, max_total_bytes=cfg.max_output_bytes)
    paths = changed_files(workdir, before, limits)
    if not paths:
        return []
    urls = reporter.output_urls(paths)
    return [upload(http, workdir, p, urls[p]) for p in paths]
