"""The frame every bench shares.

A bench runs rgrid as a user does: the CLI and snippets of the client
library in child processes, against a private local grid in a temporary
RGRID_HOME that is stopped whatever happens. Kept here once so that every
bench measures the same way.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RGRID = [sys.executable, "-m", "rgrid"]


def grid_env(home: Path, **extra: str) -> dict[str, str]:
    """This process's environment without its own RGRID_ settings, pointed at
    `home`: a developer's RGRID_API_URL must not send the bench elsewhere."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RGRID_")}
    env.update(RGRID_HOME=str(home), **extra)
    return env


def rgrid(args: Sequence[str], cwd: Path, env: dict[str, str]) -> str:
    """The CLI's standard output; a failure ends the bench with its error."""
    done = subprocess.run([*RGRID, *args], cwd=cwd, env=env, text=True, capture_output=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"rgrid {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def client_code(code: str, cwd: Path, env: dict[str, str]) -> str:
    """Run `code` in a fresh Python that speaks to the grid through the
    client library; its standard output."""
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, text=True, capture_output=True)
    if done.returncode != 0:
        raise SystemExit(f"client snippet failed: {done.stderr.strip()}")
    return done.stdout


def timed(argv: Sequence[str], cwd: Path, env: dict[str, str]) -> float:
    """Wall seconds of one whole command, from its start to its exit."""
    started = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


@contextlib.contextmanager
def local_grid(project: Path, env: dict[str, str], *up_args: str) -> Iterator[None]:
    """`rgrid local up` from `project`, and `rgrid local down` at the end,
    whatever happened in between."""
    rgrid(["local", "up", *up_args], project, env)
    try:
        yield
    finally:
        subprocess.run([*RGRID, "local", "down"], cwd=project, env=env, capture_output=True)
