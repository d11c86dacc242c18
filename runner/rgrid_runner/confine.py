"""Running one sandboxed process tree to its end inside its limits.

The job and its requirements build run the same way: the sandbox's command,
a cgroup of its own (or rlimits where cgroups are not writable), the
supervisor's timeout and stop request. When `run` returns, every process of
the tree is gone (the cgroup is emptied and removed), so nothing of a build
can still write into what is about to be published.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from rgrid.wire import Stream
from rgrid_runner.cgroups import Cgroup, CgroupManager, GroupUse
from rgrid_runner.limits import Limits, rlimit_command
from rgrid_runner.process import Check, ProcessOutcome, run_supervised
from rgrid_runner.sandbox import Job, Sandbox


@dataclass(frozen=True)
class Confined:
    """How a sandboxed process tree ended, with what its cgroup saw."""

    outcome: ProcessOutcome
    oom: bool
    pids_hit: bool
    # CPU and peak memory of the whole tree; None without cgroups (rlimits
    # measure nothing per attempt).
    usage: GroupUse | None = None


@dataclass(frozen=True)
class Confinement:
    """One attempt's sandbox, cgroups and limits, and the event that stops
    whatever it runs (cancel, fencing)."""

    sandbox: Sandbox
    cgroups: CgroupManager
    limits: Limits
    stop: threading.Event

    def run(
        self,
        job: Job,
        group_name: str,
        timeout_s: float,
        sink: Callable[[Stream, str], None],
        check: Check | None = None,
    ) -> Confined:
        launch = self.sandbox.launch(job)
        try:
            with self._cgroup(group_name) as group:
                argv = group.join_command(launch.argv) if group else rlimit_command(launch.argv, self.limits)
                outcome = run_supervised(
                    argv,
                    launch.cwd,
                    launch.env,
                    timeout_s,
                    sink,
                    self.stop,
                    check=_sampling(group, check),
                    pass_fds=launch.pass_fds,
                )
                return Confined(
                    outcome,
                    oom=group.oom_killed() if group else False,
                    pids_hit=group.hit_pid_limit() if group else False,
                    usage=group.usage() if group else None,
                )
        finally:
            launch.close()

    @contextlib.contextmanager
    def _cgroup(self, name: str) -> Iterator[Cgroup | None]:
        if not self.cgroups.available:
            yield None
            return
        group = self.cgroups.create(name, self.limits)
        try:
            yield group
        finally:
            group.remove()


def _sampling(group: Cgroup | None, check: Check | None) -> Check | None:
    """The supervisor's periodic check, which also samples the group's
    memory where the kernel keeps no peak of its own."""
    if group is None:
        return check

    def sampled() -> str | None:
        group.sample()
        return check() if check is not None else None

    return sampled
