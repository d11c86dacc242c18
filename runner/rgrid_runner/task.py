"""The Ray task that executes one attempt of one execution on a worker.

The task carries only a ticket (ids, API URL, attempt token). The spec and
fresh presigned URLs are fetched at start, which is also the fencing check:
if this attempt is no longer current the task ends without running anything.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx

from rgrid.wire import FailureReason, OutputFile, RunnerLogLine, RunnerResult, RunnerSpec
from rgrid_runner.logship import LogShipper
from rgrid_runner.process import ProcessOutcome, run_supervised
from rgrid_runner.reporter import Reporter, StaleAttempt
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
BASE_ENV_KEYS = ("PATH", "LANG", "LC_ALL", "TZ")


@dataclass(frozen=True)
class AttemptTicket:
    execution_id: str
    attempt: int
    api_url: str
    token: str


def worker_name() -> str:
    node = ""
    try:
        import ray

        node = ray.get_runtime_context().get_node_id()[:12]
    except Exception:  # noqa: BLE001 - outside Ray (tests) there is no node id
        pass
    return f"{socket.gethostname()}/{node}" if node else socket.gethostname()


def job_env(spec: RunnerSpec, workdir: Path) -> dict[str, str]:
    """The script's whole environment: nothing of the runner's own (no
    credentials), plus the user's --env values."""
    env = {k: os.environ[k] for k in BASE_ENV_KEYS if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.setdefault("LANG", "C.UTF-8")
    env.update(HOME=str(workdir), PYTHONUNBUFFERED="1", RGRID_EXECUTION_ID=spec.execution_id)
    env.update(spec.env)
    return env


def run_attempt(ticket: AttemptTicket) -> str:
    reporter = Reporter(ticket.api_url, ticket.execution_id, ticket.attempt, ticket.token)
    try:
        spec = reporter.start(worker_name())
    except StaleAttempt:
        reporter.close()
        return "stale"
    workdir = make_workdir(_work_root(), spec.execution_id, spec.attempt)
    try:
        return _execute(reporter, spec, workdir)
    except StaleAttempt:
        log.warning("attempt %d of %s was superseded", spec.attempt, spec.execution_id)
        return "stale"
    finally:
        remove_workdir(workdir)
        reporter.close()


def _work_root() -> Path | None:
    root = os.environ.get("RGRID_WORK_ROOT")
    return Path(root) if root else None


def _execute(reporter: Reporter, spec: RunnerSpec, workdir: Path) -> str:
    with httpx.Client(timeout=60.0) as http:
        fetch(http, workdir, [spec.script, *spec.inputs])
        before = snapshot(workdir)
        with LogShipper(reporter, RENEW_S) as shipper:
            outcome = run_supervised(
                [sys.executable, spec.script.path, *spec.args], workdir, job_env(spec, workdir),
                spec.resources.timeout_s, shipper.write, shipper.stop_requested,
            )
            if shipper.stale.is_set():
                raise StaleAttempt("superseded while running")
            cancelled = shipper.cancel_requested.is_set()
        reason = _failure_reason(outcome, cancelled)
        outputs: list[OutputFile] = []
        if reason is None or reason == FailureReason.EXIT_CODE:
            try:
                outputs = _upload_outputs(http, reporter, workdir, before)
            except OutputLimitExceeded as exc:
                shipper_note(reporter, f"rgrid: {exc}\n")
                reason = FailureReason.OUTPUT_TOO_LARGE
    reporter.complete(RunnerResult(exit_code=outcome.exit_code, failure_reason=reason,
                                   duration_s=outcome.duration_s, outputs=outputs))
    return reason or "ok"


def _failure_reason(outcome: ProcessOutcome, cancelled: bool) -> FailureReason | None:
    if cancelled:
        return FailureReason.CANCELLED
    if outcome.timed_out:
        return FailureReason.TIMEOUT
    if outcome.exit_code != 0:
        return FailureReason.EXIT_CODE
    return None


def _upload_outputs(http: httpx.Client, reporter: Reporter, workdir: Path,
                    before: dict[str, tuple[int, int]]) -> list[OutputFile]:
    paths = changed_files(workdir, before, OutputLimits())
    if not paths:
        return []
    urls = reporter.output_urls(paths)
    return [upload(http, workdir, p, urls[p]) for p in paths]


def shipper_note(reporter: Reporter, text: str) -> None:
    """A line from rgrid itself in the job's stderr, so the user sees why."""
    reporter.logs([RunnerLogLine(stream="stderr", data=text)])

