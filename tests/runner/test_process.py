"""Process supervision and output collection on real processes."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

from rgrid_runner.process import ProcessOutcome, run_supervised
from rgrid_runner.workdir import OutputLimits, changed_files, snapshot

FORKER = """
import os, sys, time
pid = os.fork()
if pid == 0:
    time.sleep(600)
    os._exit(0)
print(pid, flush=True)
time.sleep(600)
"""


def run(
    script: str, tmp_path: Path, timeout: float = 30.0, stop: threading.Event | None = None
) -> tuple[ProcessOutcome, list[tuple[str, str]]]:
    (tmp_path / "s.py").write_text(script)
    lines: list[tuple[str, str]] = []
    outcome = run_supervised(
        [sys.executable, "s.py"],
        tmp_path,
        {"PATH": os.environ["PATH"]},
        timeout,
        lambda s, d: lines.append((s, d)),
        stop or threading.Event(),
    )
    return outcome, lines


def test_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    outcome, lines = run(FORKER, tmp_path, timeout=1.5)
    assert outcome.timed_out and not outcome.stopped
    child = int("".join(d for s, d in lines if s == "stdout").split()[0])
    assert _gone_within(child, 5.0)


def _gone_within(pid: int, seconds: float) -> bool:
    """SIGKILL is delivered asynchronously: wait (bounded) for the process to
    be gone or a zombie."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        except FileNotFoundError:
            return True
        time.sleep(0.02)
    return False


def test_stop_request_ends_the_run(tmp_path: Path) -> None:
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    started = time.monotonic()
    outcome, _ = run("import time\ntime.sleep(600)\n", tmp_path, stop=stop)
    assert outcome.stopped and not outcome.timed_out
    assert time.monotonic() - started < 30


def test_children_left_behind_do_not_hold_the_run(tmp_path: Path) -> None:
    script = "import os, time\nif os.fork() == 0:\n    time.sleep(600)\nprint('parent done')\n"
    outcome, lines = run(script, tmp_path)
    assert outcome.exit_code == 0 and not outcome.timed_out
    assert "parent done" in "".join(d for _s, d in lines)


def test_exit_code_and_signal_death(tmp_path: Path) -> None:
    assert run("import sys\nsys.exit(7)\n", tmp_path)[0].exit_code == 7
    assert run("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n", tmp_path)[0].exit_code == 137


def test_only_new_or_changed_regular_files_are_outputs(tmp_path: Path) -> None:
    (tmp_path / "input.csv").write_text("in")
    (tmp_path / "touched.csv").write_text("old")
    before = snapshot(tmp_path)
    time.sleep(0.01)
    (tmp_path / "touched.csv").write_text("new content")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "r.json").write_text("{}")
    (tmp_path / "leak").symlink_to("/etc/hostname")
    (tmp_path / "dirlink").symlink_to("/etc")
    assert changed_files(tmp_path, before, OutputLimits()) == ["out/r.json", "touched.csv"]
