"""The one file lock: exclusive and shared, waiting or not, released when
its holder closes it or dies."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from rgrid.filelock import FileLock


def test_exclusive_excludes_and_release_frees(tmp_path: Path) -> None:
    a, b = FileLock(tmp_path / "l"), FileLock(tmp_path / "l")
    assert a.acquire(wait=False)
    assert not b.acquire(wait=False)
    assert not b.acquire(shared=True, wait=False)
    a.release()
    assert b.acquire(wait=False)
    b.release()


def test_shared_holders_coexist_and_keep_exclusive_out(tmp_path: Path) -> None:
    a, b, c = (FileLock(tmp_path / "l") for _ in range(3))
    assert a.acquire(shared=True, wait=False)
    assert b.acquire(shared=True, wait=False)
    assert not c.acquire(wait=False)
    a.release()
    b.release()
    with c.hold():
        assert c.held
    assert not c.held


def test_a_dead_holder_leaves_no_lock_behind(tmp_path: Path) -> None:
    path = tmp_path / "l"
    code = (
        "import os, sys; from pathlib import Path; from rgrid.filelock import FileLock; "
        f"FileLock(Path({str(path)!r})).acquire(); os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    lock = FileLock(path)
    assert lock.acquire(wait=False)
    lock.release()
