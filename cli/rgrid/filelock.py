"""One advisory file lock (flock) for every room: the local grid's start-up
lock, the SQLite monitor's leader lock, the runner's environment cache.

flock is tied to the open file, so the kernel releases it when its holder
dies: a crashed process never leaves a lock behind.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


class FileLock:
    """A lock on one file, held at most once by this object at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[str] | None = None

    @property
    def held(self) -> bool:
        return self._fh is not None

    def acquire(self, shared: bool = False, wait: bool = True) -> bool:
        """Take the lock (shared or exclusive). Without `wait`, False when
        another holder has it; with `wait`, always True once taken."""
        if self._fh is not None:
            raise RuntimeError(f"{self.path} is already locked by this object")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a")  # noqa: SIM115 - held across calls, closed by release()
        mode = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB)
        try:
            fcntl.flock(fh, mode)
        except BlockingIOError:
            fh.close()
            return False
        self._fh = fh
        return True

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    @contextmanager
    def hold(self, shared: bool = False) -> Iterator[None]:
        """Wait for the lock, hold it for the block."""
        self.acquire(shared=shared)
        try:
            yield
        finally:
            self.release()
