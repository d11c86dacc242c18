"""Virtual environments for jobs' requirements, cached per worker.

An environment is keyed by sha256(runtime, requirements) and shared by later
runs on the worker, of any tenant: same key, same environment.

- **Built in the job's sandbox.** A requirements file can run code (a
  source package's build script), so the cache never builds anything
  itself: the attempt's builder (rgrid_runner.build) runs the installer in
  the same sandbox as the job, under the attempt's uid, in a cgroup of its
  own, in the attempt's network namespace and with a time limit, on a
  fresh directory.
- **Published sealed.** Only when the build ended (every process of it
  gone with its cgroup) is its environment checked (a real directory, not
  a link), handed to the runner's own uid with no write bit for anyone
  else and no set-id bit, and renamed into the cache. Jobs get it
  read-only, so no build and no job can write into an environment that
  another tenant uses. A failed build is never cached.
- **No shared installer cache.** Each build downloads into its own
  directory, removed with it: a cache writable by one tenant's build
  could hand another tenant a poisoned wheel.
- **Bounded in bytes.** Least recently used environments are evicted first,
  never one in use (a shared lock is held while a job runs). Concurrent
  runs with one key build once (an exclusive lock).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rgrid.filelock import FileLock
from rgrid_runner.runtimes import Interpreter

USED_MARK = ".rgrid-used"
SIZE_MARK = ".rgrid-bytes"
BUILT_VENV = "venv"


class InstallFailed(Exception):
    """The requirements could not be installed; the message says why, for
    the job's stderr (the run fails as dependency_install)."""


@dataclass(frozen=True)
class Environment:
    path: Path

    @property
    def python(self) -> str:
        return str(self.path / "bin" / "python")

    @property
    def bin(self) -> str:
        return str(self.path / "bin")


# Builds an environment for the requirements into `<directory>/venv`, or
# raises InstallFailed: the attempt's sandboxed installer.
Builder = Callable[[Path], None]


def env_key(runtime: str, requirements: str) -> str:
    return hashlib.sha256(f"{runtime}\n{requirements}".encode()).hexdigest()[:32]


def tree_bytes(root: Path) -> int:
    """Bytes a tree takes on disk, without following links."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except FileNotFoundError:
                continue
    return total


def seal(root: Path) -> None:
    """Hand a built tree to the runner's uid: nobody else may write it, no
    file keeps a set-id bit, links are left as links."""
    uid, gid = os.getuid(), os.getgid()
    for dirpath, dirnames, filenames in os.walk(root):
        for path in (dirpath, *(os.path.join(dirpath, n) for n in (*dirnames, *filenames))):
            st = os.lstat(path)
            os.lchown(path, uid, gid)
            if not stat.S_ISLNK(st.st_mode):
                os.chmod(path, stat.S_IMODE(st.st_mode) & 0o755 | 0o400)


LOCK_POLL_S = 0.1


def _acquire(lock: FileLock, shared: bool, stop: threading.Event | None) -> None:
    """Take the lock; without `stop`, however long it takes."""
    if stop is None:
        lock.acquire(shared=shared)
        return
    while not lock.acquire(shared=shared, wait=False):
        if stop.wait(LOCK_POLL_S):
            raise InstallFailed("stopped while another run installed the same requirements")


class EnvCache:
    """The node's built environments, one per (runtime, requirements), that
    jobs bind read-only."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes

    @contextmanager
    def use(
        self, interp: Interpreter, requirements: str, build: Builder, stop: threading.Event | None = None
    ) -> Iterator[Environment]:
        """The environment for these requirements, built if needed, held
        with a shared lock while the job runs so eviction cannot remove it.
        Waiting for another run's build of the same key ends at `stop`
        (a cancel), with InstallFailed."""
        key = env_key(interp.runtime, requirements)
        final = self.root / key
        lock = FileLock(self.root / f"{key}.lock")
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            while True:
                _acquire(lock, shared=True, stop=stop)
                if (final / USED_MARK).exists():
                    break
                lock.release()
                _acquire(lock, shared=False, stop=stop)
                try:
                    if not (final / USED_MARK).exists():
                        self._publish(build, final)
                finally:
                    lock.release()
            (final / USED_MARK).touch()
            self._evict(keep=key)
            yield Environment(final)
        finally:
            lock.release()

    def _publish(self, build: Builder, final: Path) -> None:
        tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=self.root))
        try:
            build(tmp)
            venv = tmp / BUILT_VENV
            if venv.is_symlink() or not venv.is_dir() or not os.path.lexists(venv / "bin" / "python"):
                raise InstallFailed("installing requirements left no environment")
            seal(venv)
            (venv / SIZE_MARK).write_text(str(tree_bytes(venv)))
            (venv / USED_MARK).touch()
            if final.exists():
                shutil.rmtree(final)
            venv.rename(final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _evict(self, keep: str) -> None:
        """Least recently used first, until the cache fits its bytes."""
        envs = []
        for path in self.root.iterdir():
            try:
                used = (path / USED_MARK).stat().st_mtime
                size = int((path / SIZE_MARK).read_text())
            except (OSError, ValueError):
                continue
            envs.append((used, size, path))
        total = sum(size for _used, size, _path in envs)
        for _used, size, path in sorted(envs):
            if total <= self.max_bytes:
                return
            if path.name == keep:
                continue
            lock = FileLock(self.root / f"{path.name}.lock")
            if lock.acquire(wait=False):
                try:
                    shutil.rmtree(path, ignore_errors=True)
                    total -= size
                finally:
                    lock.release()
