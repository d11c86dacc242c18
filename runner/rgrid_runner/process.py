"""Runs the script as its own process group and supervises it.

stdout and stderr are read from one selector loop so lines keep the order in
which the script wrote them. A timeout or a stop request (cancel, fencing)
sends SIGTERM to the whole group, then SIGKILL after a grace period, so that
children the script started die with it.
"""

from __future__ import annotations

import codecs
import os
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rgrid.wire import Stream

READ_SIZE = 64 * 1024
KILL_GRACE_S = 3.0
# How long to keep reading pipes after the script exited (a detached child
# may hold them open).
DRAIN_S = 1.0


@dataclass
class ProcessOutcome:
    exit_code: int
    timed_out: bool
    stopped: bool
    duration_s: float
    # Why a watchdog check stopped the script (a cap was exceeded), if it did.
    limit: str | None = None


Check = Callable[[], str | None]
CHECK_EVERY_S = 0.5


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def exit_code_of(returncode: int) -> int:
    """A signal death becomes 128+signal, as a shell reports it."""
    return 128 - returncode if returncode < 0 else returncode


def run_supervised(
    argv: list[str],
    cwd: Path,
    env: dict[str, str],
    timeout_s: float,
    sink: Callable[[Stream, str], None],
    stop: threading.Event,
    check: Check | None = None,
    pass_fds: tuple[int, ...] = (),
) -> ProcessOutcome:
    """Run argv to its end, the timeout, a stop request, or until `check`
    (called every CHECK_EVERY_S) names a limit the script exceeded.
    `pass_fds` stay open in the child (the sandbox's seccomp filter)."""
    started = time.monotonic()
    next_check = started + CHECK_EVERY_S
    limit: str | None = None
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        pass_fds=pass_fds,
    )
    pgid = proc.pid
    if proc.stdout is None or proc.stderr is None:
        raise RuntimeError("the script's output pipes were not created")
    pipes = {"stdout": proc.stdout, "stderr": proc.stderr}
    deadline = started + timeout_s
    timed_out = stopped = False
    kill_at: float | None = None
    sel = selectors.DefaultSelector()
    decoders = {}
    for stream, pipe in pipes.items():
        sel.register(pipe, selectors.EVENT_READ, stream)
        decoders[stream] = codecs.getincrementaldecoder("utf-8")(errors="replace")
    open_pipes = 2
    exited_at: float | None = None
    try:
        while True:
            now = time.monotonic()
            if exited_at is None and proc.poll() is not None:
                # Whatever the script left behind in its group dies with it.
                exited_at = now
                _signal_group(pgid, signal.SIGKILL)
            if exited_at is not None and (not open_pipes or now - exited_at > DRAIN_S):
                break
            if check is not None and limit is None and exited_at is None and now >= next_check:
                next_check = now + CHECK_EVERY_S
                limit = check()
                if limit is not None:
                    stop.set()
            if exited_at is None and kill_at is None and (now >= deadline or stop.is_set()):
                timed_out = not stop.is_set()
                stopped = not timed_out
                _signal_group(pgid, signal.SIGTERM)
                kill_at = now + KILL_GRACE_S
            if kill_at is not None and now >= kill_at and exited_at is None:
                _signal_group(pgid, signal.SIGKILL)
                kill_at = float("inf")
            if not open_pipes:
                time.sleep(0.005)
                continue
            for key, _ in sel.select(timeout=0.05):
                data = os.read(key.fd, READ_SIZE)
                if not data:
                    sel.unregister(key.fileobj)
                    open_pipes -= 1
                    continue
                sink(key.data, decoders[key.data].decode(data))
    finally:
        sel.close()
        for pipe in pipes.values():
            pipe.close()
        if proc.poll() is None:
            _signal_group(pgid, signal.SIGKILL)
            proc.wait()
    return ProcessOutcome(
        exit_code=exit_code_of(proc.returncode),
        timed_out=timed_out,
        stopped=stopped,
        duration_s=time.monotonic() - started,
        limit=limit,
    )
