"""Virtual environments for jobs' requirements, cached per worker.

An environment is keyed by sha256(runtime, requirements) and shared by later
runs on the worker. Concurrent runs with one key install once (a file lock);
a failed install is never cached (it is built in a temporary dir and only
renamed into place when complete); the cache is bounded, least recently used
environments are evicted first.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rgrid.filelock import FileLock
from rgrid_runner.runtimes import Interpreter

USED_MARK = ".rgrid-used"
# The worker's network settings the installer needs to reach the package
# index (proxies, CA bundles, index URLs); nothing else of the worker's
# environment reaches it, and none of this reaches the job.
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
        "UV_FIND_LINKS",
        "UV_INSECURE_HOST",
        "PIP_INDEX_URL",
        "PIP_EXTRA_INDEX_URL",
        "PIP_CERT",
    }
)
INSTALL_TIMEOUT_S = 1800


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


def env_key(runtime: str, requirements: str) -> str:
    return hashlib.sha256(f"{runtime}\n{requirements}".encode()).hexdigest()[:32]


def _uv() -> str:
    beside = Path(sys.executable).parent / "uv"
    return str(beside) if beside.exists() else shutil.which("uv") or "uv"


class EnvCache:
    def __init__(self, root: Path, max_envs: int = 20) -> None:
        self.root = root
        self.max_envs = max_envs

    @contextmanager
    def use(
        self, interp: Interpreter, requirements: str, log: Callable[[str], None]
    ) -> Iterator[Environment]:
        """The environment for these requirements, installed if needed, held
        with a shared lock while the job runs so eviction cannot remove it.
        Installer output goes to `log` (the job's stderr)."""
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
                        self._build(interp, requirements, final, log)
            (final / USED_MARK).touch()
            self._evict(keep=key)
            yield Environment(final)
        finally:
            lock.release()

    def _build(self, interp: Interpreter, requirements: str, final: Path, log: Callable[[str], None]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=self.root))
        env = {k: v for k, v in os.environ.items() if k in INSTALLER_ENV}
        env.update(
            PATH=os.environ.get("PATH", "/usr/bin:/bin"),
            HOME=str(self.root),
            UV_CACHE_DIR=str(self.root / ".uv-cache"),
            UV_NO_PROGRESS="1",
        )
        req_file = tmp / "requirements.txt"
        try:
            req_file.write_text(requirements)
            venv = tmp / "venv"
            for argv in (
                [_uv(), "venv", "--quiet", "--relocatable", "--python", interp.executable, str(venv)],
                [_uv(), "pip", "install", "--python", str(venv / "bin" / "python"), "-r", str(req_file)],
            ):
                out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
                if out.stdout or out.stderr:
                    log(out.stdout + out.stderr)
                if out.returncode != 0:
                    raise InstallFailed(f"installing requirements failed (exit {out.returncode})")
            (venv / USED_MARK).touch()
            if final.exists():
                shutil.rmtree(final)
            venv.rename(final)
        except subprocess.TimeoutExpired as exc:
            raise InstallFailed(f"installing requirements took over {INSTALL_TIMEOUT_S} s") from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _evict(self, keep: str) -> None:
        envs = [p for p in self.root.iterdir() if p.is_dir() and (p / USED_MARK).exists()]
        if len(envs) <= self.max_envs:
            return
        envs.sort(key=lambda p: (p / USED_MARK).stat().st_mtime)
        for path in envs[: len(envs) - self.max_envs]:
            if path.name == keep:
                continue
            lock = FileLock(self.root / f"{path.name}.lock")
            if lock.acquire(wait=False):
                try:
                    shutil.rmtree(path, ignore_errors=True)
                finally:
                    lock.release()
