"""One attempt of one execution on a worker, in its own process
(rgrid_runner.attemptproc), started by the node's attempt service.

It gets only a ticket (ids, API URL, attempt token). The spec and fresh
presigned URLs are fetched at start, which is also the fencing check: if
this attempt is no longer current it ends without running anything.

An attempt then runs in three steps (`AttemptRun`): prepare the job and
launch it in the sandbox; supervise it to an outcome and a failure reason;
collect the files it wrote. The log shipper is open the whole time: it
renews the lease, and it is the one way rgrid's own notes ("killed after the
timeout") reach the job's stderr.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
from pydantic import ValidationError

from rgrid.errors import StaleAttempt
from rgrid.sizing import out_of_memory_note
from rgrid.version import VERSION
from rgrid.wire import (
    AttemptTicket,
    FailureReason,
    OutputFile,
    RunnerEnvironment,
    RunnerResult,
    RunnerSpec,
    RunnerStart,
    Usage,
)
from rgrid_runner.build import BuildPlace, build_environment
from rgrid_runner.cgroups import GroupUse
from rgrid_runner.config import RunnerConfig, runner_config
from rgrid_runner.confine import Confinement
from rgrid_runner.envs import InstallFailed
from rgrid_runner.httpclient import process_client
from rgrid_runner.limits import Limits, LogBudget
from rgrid_runner.logship import LogShipper
from rgrid_runner.packages import interpreter_packages
from rgrid_runner.process import ProcessOutcome
from rgrid_runner.reporter import Reporter
from rgrid_runner.runtimes import Interpreter
from rgrid_runner.sandbox import Job
from rgrid_runner.settings import runner_settings
from rgrid_runner.slots import JobUser
from rgrid_runner.workdir import (
    OutputLimitExceeded,
    OutputLimits,
    Snapshot,
    changed_files,
    make_workdir,
    remove_workdir,
    snapshot,
    upload,
)
from rgrid_runner.workdisk import WorkDisk

log = logging.getLogger(__name__)

RENEW_S = 1.0
ABANDON_CHECK_S = 0.2
# The script's PATH after its interpreter's (or environment's) bin.
JOB_PATH_TAIL = "/usr/local/bin:/usr/bin:/bin"


def runner_start(ray_node_id: str | None) -> RunnerStart:
    """Who runs this attempt: the node agent's worker id and the Ray node
    its task was placed on."""
    worker_id = runner_settings().worker_id
    return RunnerStart(worker=worker_id or socket.gethostname(), worker_id=worker_id, ray_node_id=ray_node_id)


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


def run_attempt(
    ticket: AttemptTicket, node_credential: str, ray_node_id: str | None, abandoned: threading.Event
) -> str:
    """Run the attempt to its report, speaking with the ticket's token and
    the node's credential; how it ended. `abandoned` is set when its Ray
    task is gone: the job stops and nothing is reported."""
    http = process_client()
    reporter = Reporter(http, ticket, node_credential)
    try:
        spec = reporter.start(runner_start(ray_node_id))
    except StaleAttempt:
        return "stale"
    if abandoned.is_set():
        return "stale"
    if (spec.execution_id, spec.attempt) != (ticket.execution_id, ticket.attempt):
        # Names and paths on this node come from these: only the ticket's.
        log.warning(
            "the API answered %s attempt %d with another attempt's spec", ticket.execution_id, ticket.attempt
        )
        return "stale"
    cfg = runner_config()
    workdir = make_workdir(cfg.work_root, spec.execution_id, spec.attempt)
    try:
        # The attempt's own uid, held from its requirements build to its end,
        # and its own disk, unmounted once it reported.
        with (
            cfg.slots.claim() if cfg.sandbox.isolated else contextlib.nullcontext() as user,
            cfg.disks.attach(workdir) as disk,
        ):
            return AttemptRun(cfg, reporter, http, spec, workdir, user, disk).execute(abandoned)
    except StaleAttempt:
        log.warning("attempt %d of %s was superseded", spec.attempt, spec.execution_id)
        return "stale"
    finally:
        remove_workdir(workdir)


@dataclass(frozen=True)
class Verdict:
    """How an attempt ended, before outputs: what the runner reports."""

    exit_code: int | None
    reason: FailureReason | None
    duration_s: float = 0.0
    # What the script's process tree used, as far as it got (None: never
    # started, or no cgroup to measure it).
    used: GroupUse | None = None


class AttemptRun:
    """One attempt on this worker, from the fetched spec to the report."""

    def __init__(
        self,
        cfg: RunnerConfig,
        reporter: Reporter,
        http: httpx.Client,
        spec: RunnerSpec,
        workdir: Path,
        user: JobUser | None,
        disk: WorkDisk,
    ) -> None:
        self.cfg = cfg
        self.user = user
        self.disk = disk
        self.reporter = reporter
        self.http = http
        self.spec = spec
        self.workdir = workdir
        self.limits = Limits.for_attempt(spec.resources, cfg.max_pids)
        self.shipper = LogShipper(reporter, RENEW_S)
        # One budget for everything the user's code prints: the script's
        # output and, with --verbose, its requirements' build.
        self.log_budget = LogBudget(cfg.max_log_bytes, self.shipper.write)
        self.confinement = Confinement(cfg.sandbox, cfg.cgroups, self.limits, self.shipper.stop_requested)
        # What the script runs with, once its environment is ready.
        self.environment: RunnerEnvironment | None = None

    def execute(self, abandoned: threading.Event) -> str:
        self.shipper.start()
        finished = threading.Event()
        threading.Thread(
            target=self._abandon_when, args=(abandoned, finished), name="rgrid-abandon", daemon=True
        ).start()
        try:
            verdict, outputs = self._run()
        finally:
            tail = self.shipper.close()
            finished.set()
        if self.shipper.stale.is_set():
            # Abandoned (or superseded) while its outputs went up: nothing is reported.
            raise StaleAttempt("abandoned before its report")
        # What the shipper had not sent travels with the result, which the
        # API records in the same transaction: a follower sees all of it.
        self.reporter.complete(
            RunnerResult(
                exit_code=verdict.exit_code,
                failure_reason=verdict.reason,
                duration_s=verdict.duration_s,
                outputs=outputs,
                logs=tail,
                usage=_reported_usage(verdict),
                environment=self.environment,
            )
        )
        return verdict.reason or "ok"

    def _abandon_when(self, abandoned: threading.Event, finished: threading.Event) -> None:
        """Stop the attempt if its Ray task goes; end with it (the process
        runs attempt after attempt: no watcher may outlive its own)."""
        while not finished.is_set():
            if abandoned.wait(ABANDON_CHECK_S):
                self.shipper.abandon()
                return

    def note(self, text: str) -> None:
        """A line from rgrid itself in the job's stderr."""
        self.shipper.write("stderr", f"rgrid: {text}\n")

    def _show_installer(self, text: str) -> None:
        """The installer's output as it comes (`--verbose`): rgrid's words
        to the user, so on stderr; counted in the attempt's log budget, as
        a build runs the requirements' own code."""
        self.log_budget.write("stderr", text)

    def _run(self) -> tuple[Verdict, list[OutputFile]]:
        interp = self.cfg.runtimes.get(self.spec.runtime)
        if interp is None:
            self.note(f"runtime {self.spec.runtime} is not installed on this worker")
            return Verdict(127, FailureReason.RUNTIME_UNAVAILABLE), []
        self.cfg.inputs.place(
            self.http,
            [self.spec.script, *self.spec.inputs],
            self.disk.inputs_dir,
            share=self.cfg.sandbox.isolated,
        )
        self.disk.mount()
        before = snapshot(self.workdir)
        with contextlib.ExitStack() as stack:
            try:
                job = self._prepare(interp, stack)
            except InstallFailed as exc:
                if self.shipper.stale.is_set():
                    raise StaleAttempt("superseded while installing") from None
                if self.shipper.cancel_requested.is_set():
                    return Verdict(None, FailureReason.CANCELLED), []
                if exc.output and not self.spec.verbose:
                    # The installer's own words, both streams: rgrid's to the
                    # user, so on stderr, never in the script's stdout
                    # (with --verbose they went there as they came).
                    self.shipper.write("stderr", exc.output)
                self.note(str(exc))
                if exc.users_fault:
                    return Verdict(None, FailureReason.REQUIREMENTS), []
                return Verdict(None, FailureReason.DEPENDENCY_INSTALL), []
            verdict = self._supervise(job)
        if verdict.reason not in (None, FailureReason.EXIT_CODE):
            return verdict, []
        try:
            return verdict, self._collect(before)
        except OutputLimitExceeded as exc:
            self.note(str(exc))
            return replace(verdict, reason=FailureReason.OUTPUT_TOO_LARGE), []

    # -- step 1: prepare and launch -------------------------------------------
    def _prepare(self, interp: Interpreter, stack: contextlib.ExitStack) -> Job:
        """The job as the sandbox will run it: the interpreter, or the cached
        environment with the requirements (built in the job's sandbox, held
        while the job runs), the trees it may read, its limits, and its own
        network namespace (held while the job runs)."""
        python, readonly = interp.executable, [Path(interp.prefix)]
        path = f"{Path(interp.executable).parent}:{JOB_PATH_TAIL}"
        packages = interpreter_packages(interp.prefix)
        netns = None
        if self.cfg.sandbox.needs_netns and (self.spec.network or self.spec.requirements):
            # A build reaches the package index even for a job without network.
            netns = stack.enter_context(
                self.cfg.jobnet.attach(f"{self.spec.execution_id}-{self.spec.attempt}")
            )
        if self.spec.requirements:
            requirements = self.spec.requirements
            env = stack.enter_context(
                self.cfg.envs.use(
                    interp,
                    requirements,
                    lambda home: self._build(interp, requirements, home, netns),
                    self.shipper.stop_requested,
                )
            )
            python, path = env.python, f"{env.bin}:{path}"
            readonly.append(env.path)
            packages = env.packages
        try:
            self.environment = RunnerEnvironment(
                interpreter=interp.version
                or f"Python {interp.runtime.split(':')[-1]} (patch version not probed)",
                packages=list(packages),
                rgrid_version=VERSION,
            )
        except ValidationError:
            # More distributions than a report holds: the run goes on, unrecorded.
            log.warning("%s: its environment is too large to record", self.spec.execution_id)
        self.cfg.sandbox.prepare(self.workdir, self.user)
        return Job(
            argv=[python, self.spec.script.path, *self.spec.args],
            workdir=self.workdir,
            env=job_env(self.spec, path),
            limits=self.limits,
            user=self.user,
            readonly=readonly,
            network=self.spec.network,
            name=f"rgrid-{self.spec.execution_id}-{self.spec.attempt}",
            image=self._image(),
            netns=netns if self.spec.network else None,
            resolv_conf=self.cfg.jobnet.resolv_path,
        )

    def _image(self) -> str:
        return f"python:{self.spec.runtime.split(':')[-1]}-slim"

    def _build(self, interp: Interpreter, requirements: str, directory: Path, netns: Path | None) -> None:
        place = BuildPlace(
            name=f"{self.spec.execution_id}-{self.spec.attempt}-build",
            user=self.user,
            netns=netns,
            resolv_conf=self.cfg.jobnet.resolv_path,
            index_url=self.cfg.pip_index_url,
            image=self._image(),
        )
        wanted = [
            line.strip() for line in requirements.splitlines() if line.strip() and not line.startswith("#")
        ]
        shown = ", ".join(wanted[:5]) + (f" and {len(wanted) - 5} more" if len(wanted) > 5 else "")
        self.note(f"installing {shown} (not cached on this node yet)")
        started = time.monotonic()
        build_environment(
            self.confinement,
            place,
            self.cfg.disks,
            interp,
            requirements,
            directory,
            self.cfg.install_timeout_s,
            self._show_installer if self.spec.verbose else None,
        )
        self.note(f"installed in {time.monotonic() - started:.1f} s")

    # -- step 2: supervise --------------------------------------------------
    def _supervise(self, job: Job) -> Verdict:
        """Run the job inside its cgroup (or rlimits) to its end, a cap, the
        timeout, a cancel or fencing; say why it ended."""
        budget = self.log_budget
        ended = self.confinement.run(
            job,
            f"{self.spec.execution_id}-{self.spec.attempt}",
            self.spec.resources.timeout_s,
            budget.write,
            check=lambda: budget.exceeded() or self.disk.exceeded(),
        )
        outcome = ended.outcome
        if outcome.limit is None and outcome.exit_code != 0:
            # It may have died of ENOSPC between two checks.
            outcome = replace(outcome, limit=self.disk.full())
        if self.shipper.stale.is_set():
            raise StaleAttempt("superseded while running")
        reason = _failure_reason(
            outcome, cancelled=self.shipper.cancel_requested.is_set(), oom=ended.oom, pids_hit=ended.pids_hit
        )
        explanation = self._explanation(reason, outcome, ended.usage)
        if explanation:
            self.note(explanation)
        return Verdict(outcome.exit_code, reason, outcome.duration_s, ended.usage)

    def _explanation(
        self, reason: FailureReason | None, outcome: ProcessOutcome, used: GroupUse | None
    ) -> str | None:
        """Why rgrid stopped the script, for the user reading its stderr."""
        if reason == FailureReason.TIMEOUT:
            return f"killed after the {self.spec.resources.timeout_s:g} s timeout"
        if reason == FailureReason.OUT_OF_MEMORY:
            return out_of_memory_note(self.spec.resources.memory_mb, used.peak_memory_bytes if used else None)
        if reason == FailureReason.OUTPUT_TOO_LARGE:
            return f"stopped: {outcome.limit}"
        if reason == FailureReason.PROCESS_LIMIT:
            return f"the script hit the process limit ({self.limits.max_pids} processes)"
        return None

    # -- step 3: collect outputs --------------------------------------------
    def _collect(self, before: Snapshot) -> list[OutputFile]:
        """Upload every file created or changed under the work dir."""
        limits = OutputLimits(max_files=self.cfg.max_output_files, max_total_bytes=self.cfg.max_output_bytes)
        paths = changed_files(self.workdir, before, limits)
        if not paths:
            return []
        urls = self.reporter.output_urls(paths)
        return [upload(self.http, self.workdir, p, urls[p]) for p in paths]


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


def _reported_usage(verdict: Verdict) -> Usage | None:
    """The attempt's usage as reported (output bytes are the API's, from
    the outputs it verified); none for a script that never ran."""
    if verdict.used is None and verdict.duration_s == 0:
        return None
    used = verdict.used
    return Usage(
        cpu_seconds=round(used.cpu_seconds, 3) if used and used.cpu_seconds is not None else None,
        peak_memory_bytes=used.peak_memory_bytes if used else None,
        wall_seconds=round(verdict.duration_s, 3),
    )
