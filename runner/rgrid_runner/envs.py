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
- **Bounded in bytes and files.** Least recently used environments are
  evicted first, never one in use (a shared lock is held while a job runs).
  Every entry counts at least one block, and entries are counted too, so a
  build of a million empty files is not free. Concurrent runs with one key
  build once (an exclusive lock).
- **Its package set, listed once.** When it is published, the names of
  its installed distributions (`rgrid_runner.packages`) are written beside
  it, for every run's provenance.
- **Bookkeeping beside the tree, not in it.** A build controls every name
  in its tree (a link named like a marker would have the runner write
  through it as root), so the cache's own files lie in its root, written
  without following links.
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
from rgrid_runner.limits import tree_usage
from rgrid_runner.packages import installed
from rgrid_runner.runtimes import Interpreter

USED_SUFFIX = ".used"
USAGE_SUFFIX = ".usage"
PACKAGES_SUFFIX = ".packages"
BUILT_VENV = "venv"


class InstallFailed(Exception):
    """The requirements could not be installed; the message says why, for
    the job's stderr. The user's fault (a package that does not exist, no
    version that satisfies, a package that fails to build) fails the run
    as `requirements`; anything else (the index or network down, the
    node's disk) as `dependency_install`, the grid's."""

    def __init__(self, message: str, users_fault: bool = False, output: str = "") -> None:
        super().__init__(message)
        self.users_fault = users_fault
        self.output = output


@dataclass(frozen=True)
class Environment:
    path: Path
    # `name==version` of everything installed in it.
    packages: tuple[str, ...] = ()

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


def _write_mark(path: Path, text: str) -> None:
    """A bookkeeping file of the runner's, never through a link."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


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
    jobs bind read-only. Each is `<root>/<key>`; its bookkeeping lies beside
    it (`<key>.used`, whose mtime is its last use and whose presence says it
    is complete, and `<key>.usage`), never inside the tree a build made."""

    def __init__(self, root: Path, max_bytes: int, max_files: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.max_files = max_files

    def _used(self, key: str) -> Path:
        return self.root / f"{key}{USED_SUFFIX}"

    def _usage(self, key: str) -> Path:
        return self.root / f"{key}{USAGE_SUFFIX}"

    def _packages_mark(self, key: str) -> Path:
        return self.root / f"{key}{PACKAGES_SUFFIX}"

    def _packages(self, key: str) -> tuple[str, ...]:
        """The environment's package set, listed when it was published (an
        environment published before rgrid listed them is listed now)."""
        mark = self._packages_mark(key)
        try:
            return tuple(mark.read_text().split())
        except FileNotFoundError:
            packages = installed(self.root / key)
            _write_mark(mark, "\n".join(packages))
            return tuple(packages)

    @contextmanager
    def use(
        self, interp: Interpreter, requirements: str, build: Builder, stop: threading.Event | None = None
    ) -> Iterator[Environment]:
        """The environment for these requirements, built if needed, held
        with a shared lock while the job runs so eviction cannot remove it.
        Waiting for another run's build of the same key ends at `stop`
        (a cancel), with InstallFailed."""
        key = env_key(interp.runtime, requirements)
        lock = FileLock(self.root / f"{key}.lock")
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            while True:
                _acquire(lock, shared=True, stop=stop)
                if self._used(key).exists():
                    break
                lock.release()
                _acquire(lock, shared=False, stop=stop)
                try:
                    if not self._used(key).exists():
                        self._publish(build, key)
                finally:
                    lock.release()
            os.utime(self._used(key))
            self._evict(keep=key)
            yield Environment(self.root / key, self._packages(key))
        finally:
            lock.release()

    def _publish(self, build: Builder, key: str) -> None:
        final = self.root / key
        tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=self.root))
        try:
            build(tmp)
            venv = tmp / BUILT_VENV
            if venv.is_symlink() or not venv.is_dir() or not os.path.lexists(venv / "bin" / "python"):
                raise InstallFailed("installing requirements left no environment")
            seal(venv)
            usage = tree_usage(venv)
            if final.exists():
                shutil.rmtree(final)
            venv.rename(final)
            _write_mark(self._packages_mark(key), "\n".join(installed(final)))
            _write_mark(self._usage(key), f"{usage.bytes} {usage.files}")
            _write_mark(self._used(key), "")  # last: the environment is complete
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _evict(self, keep: str) -> None:
        """Least recently used first, until the cache fits its bytes and files."""
        envs = []
        for used in self.root.glob(f"*{USED_SUFFIX}"):
            key = used.name.removesuffix(USED_SUFFIX)
            try:
                last = used.stat().st_mtime
                size, files = (int(v) for v in self._usage(key).read_text().split())
            except (OSError, ValueError):
                continue
            envs.append((last, size, files, key))
        total = sum(size for _last, size, _files, _key in envs)
        count = sum(files for _last, _size, files, _key in envs)
        for _last, size, files, key in sorted(envs):
            if total <= self.max_bytes and count <= self.max_files:
                return
            if key == keep:
                continue
            lock = FileLock(self.root / f"{key}.lock")
            if lock.acquire(wait=False):
                try:
                    self._used(key).unlink(missing_ok=True)  # first: no one takes it as complete
                    shutil.rmtree(self.root / key, ignore_errors=True)
                    self._usage(key).unlink(missing_ok=True)
                    self._packages_mark(key).unlink(missing_ok=True)
                    total -= size
                    count -= files
                finally:
                    lock.release()
