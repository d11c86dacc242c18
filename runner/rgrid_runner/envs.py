"""Virtual environments for jobs' requirements, cached per worker.

An environment is keyed by sha256(runtime, requirements) and shared by later
runs on the worker, of any tenant: same key, same environment.

- **Built in the job's sandbox.** A requirements file can run code (a
  source package's build script), so the cache never builds anything
  itself: the attempt's builder (task.py) runs the installer in the same
  sandbox as the job, under the attempt's uid, in its own cgroup and
  network namespace and with a time limit, on a fresh directory.
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

import contextlib
import hashlib
import logging
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rgrid.filelock import FileLock
from rgrid_runner.runtimes import Interpreter
from rgrid_runner.systools import PRIVILEGED_ENV

log = logging.getLogger(__name__)

USED_MARK = ".rgrid-used"
SIZE_MARK = ".rgrid-bytes"
BUILT_VENV = "venv"


class InstallFailed(Exception):
    pass


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


class EnvCache:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes

    @contextmanager
    def use(self, interp: Interpreter, requirements: str, build: Builder) -> Iterator[Environment]:
        """The environment for these requirements, built if needed, held
        with a shared lock while the job runs so eviction cannot remove it."""
        key = env_key(interp.runtime, requirements)
        final = self.root / key
        lock = FileLock(self.root / f"{key}.lock")
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            while True:
                lock.acquire(shared=True)
                if (final / USED_MARK).exists():
                    break
                lock.release()
                with lock.hold():
                    if not (final / USED_MARK).exists():
                        self._publish(build, final)
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


# The operator's network settings the installer needs to reach the package
# index (proxies, CA bundles, index URLs), taken from the worker's own
# environment; nothing else of it reaches the build, and nothing of the
# tenant's (its --env applies to its script only).
INSTALLER_ENV = frozenset(
    {
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "UV_NATIVE_TLS",
        "UV_INDEX_URL",
        "UV_EXTRA_INDEX_URL",
        "UV_DEFAULT_INDEX",
        "UV_INDEX",
        "UV_INSECURE_HOST",
    }
)
REQUIREMENTS_FILE = "requirements.txt"
INSTALLER_CACHE = ".uv-cache"


def uv_binary() -> Path:
    """The installer: the uv installed beside rgrid, else on the worker's PATH."""
    beside = Path(sys.executable).parent / "uv"
    found = beside if beside.exists() else shutil.which("uv")
    if found is None:
        raise InstallFailed("this worker has no uv to install requirements with")
    return Path(found).resolve()


def installer_env(home: str, index_url: str | None) -> dict[str, str]:
    """The build's whole environment: fixed, the operator's network settings,
    and the operator's index (RGRID_PIP_INDEX_URL) if set."""
    env = {k: v for k, v in os.environ.items() if k in INSTALLER_ENV}
    env.update(
        PATH="/usr/bin:/bin",
        HOME=home,
        UV_CACHE_DIR=f"{home}/{INSTALLER_CACHE}",
        UV_NO_PROGRESS="1",
        UV_NO_CONFIG="1",
        UV_PYTHON_DOWNLOADS="never",
    )
    if index_url:
        env["UV_DEFAULT_INDEX"] = index_url
    return env


def installer_argv(uv: Path, interp: Interpreter, home: str) -> list[str]:
    """Create the venv and install the requirements into it, in one process
    tree: `<home>/venv` from `<home>/requirements.txt`."""
    script = (
        'uv="$1"; python="$2"; home="$3"\n'
        '"$uv" venv --quiet --relocatable --python "$python" "$home/venv"\n'
        f'exec "$uv" pip install --python "$home/venv/bin/python" -r "$home/{REQUIREMENTS_FILE}"\n'
    )
    return ["/bin/sh", "-ec", script, "rgrid-install", str(uv), interp.executable, home]


def interpreter_seed(root: Path, interp: Interpreter) -> Path:
    """What uv learns about an interpreter by running it (~40 ms), learnt
    once per interpreter by the runner itself (no tenant input: the node's
    interpreter and an empty venv) and copied into each build's own cache,
    so a build starts warm without sharing a writable cache with anyone."""
    st = os.stat(interp.executable)
    key = hashlib.sha256(f"{interp.executable}\n{st.st_mtime_ns}".encode()).hexdigest()[:16]
    seed = root / f".seed-{key}"
    if seed.is_dir():
        return seed
    scratch = Path(tempfile.mkdtemp(prefix=".seeding-", dir=root))
    try:
        subprocess.run(
            [str(uv_binary()), "venv", "--quiet", "--python", interp.executable, str(scratch / "venv")],
            env={**PRIVILEGED_ENV, "UV_CACHE_DIR": str(scratch / "cache"), "UV_NO_CONFIG": "1"},
            capture_output=True,
            check=True,
            timeout=120,
        )
        learnt = [p for p in (scratch / "cache").iterdir() if p.name.startswith("interpreter-")]
        staged = scratch / "seed"
        staged.mkdir()
        for part in learnt:
            shutil.copytree(part, staged / part.name)
        with contextlib.suppress(OSError):  # another process seeded it first
            staged.rename(seed)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("cannot learn about %s ahead of builds: %s", interp.executable, exc)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return seed
