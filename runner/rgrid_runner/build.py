"""Installing a job's requirements, in the job's own sandbox.

A requirements file can run code on the node: a source package's build
script, a build backend fetched from the index. So the installer runs like
the job itself: under the attempt's uid, without capabilities, under
seccomp, in the attempt's network namespace (the internet only, the node's
job-network rules; a job run with --network none gets one for its build
only), in a cgroup of its own with the job's memory, CPU and process
limits, and within RGRID_INSTALL_TIMEOUT_S. It sees the interpreter, the
installer, the operator's CA bundle and its own directory, nothing else of
the node. Nothing of the tenant's --env reaches it. EnvCache (envs.py)
publishes what it built only after it ended.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rgrid.requirements import RefusedRequirement, check_requirements
from rgrid.wire import Stream
from rgrid_runner.confine import Confinement
from rgrid_runner.envs import InstallFailed
from rgrid_runner.runtimes import Interpreter
from rgrid_runner.sandbox import Job
from rgrid_runner.slots import JobUser
from rgrid_runner.systools import PRIVILEGED_ENV, SYSTEM_PATH, found
from rgrid_runner.workdisk import WorkDisk, WorkDisks

log = logging.getLogger(__name__)


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
# An operator's CA bundle for a proxy or a private index: passed on, and
# bound read-only into the build where it lies outside /etc/ssl.
CA_SETTINGS = ("SSL_CERT_FILE", "SSL_CERT_DIR")


def operator_ca() -> dict[str, Path]:
    """The CA settings of the worker's environment that name existing paths."""
    return {k: Path(os.environ[k]) for k in CA_SETTINGS if k in os.environ and os.path.exists(os.environ[k])}


def uv_binary() -> Path:
    """The installer: the uv installed beside rgrid, else the system's (never
    one that a PATH names: the runner starts it as root to seed builds)."""
    beside = Path(sys.executable).parent / "uv"
    uv = str(beside) if beside.exists() else found("uv")
    if uv is None:
        raise InstallFailed("this worker has no uv to install requirements with")
    return Path(uv).resolve()


def installer_env(home: str, index_url: str | None) -> dict[str, str]:
    """The build's whole environment: fixed, the operator's network settings,
    and the operator's index (RGRID_PIP_INDEX_URL) if set."""
    env = {k: v for k, v in os.environ.items() if k in INSTALLER_ENV}
    env.update({k: str(path) for k, path in operator_ca().items()})
    env.update(
        PATH=SYSTEM_PATH,
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


@dataclass(frozen=True)
class BuildPlace:
    """Where a build runs: the attempt's uid and network namespace, and
    what it tells the installer (the operator's index)."""

    name: str
    user: JobUser | None
    netns: Path | None
    resolv_conf: Path | None
    index_url: str | None
    image: str | None = None


def build_environment(
    confinement: Confinement,
    place: BuildPlace,
    disks: WorkDisks,
    interp: Interpreter,
    requirements: str,
    directory: Path,
    timeout_s: float,
    show: Callable[[str], None] | None = None,
) -> None:
    """Install `requirements` into `directory/venv`; InstallFailed says why
    not, and carries the installer's last output (which the job's log shows
    only then: a build that works is rgrid's business, not the user's,
    unless they asked to `show` it as it comes: `--verbose`).

    The build writes on a disk of its own (rgrid_runner.workdisk, the job's
    limits in bytes and files), so it cannot fill the node's; what it built
    is copied out of it once it ended. The lines are checked again here: an
    execution recorded before the API checked them (a retry of an old run)
    gets the same answer."""
    try:
        check_requirements(requirements)
    except RefusedRequirement as exc:
        raise InstallFailed(str(exc)) from None
    seed = interpreter_seed(directory.parent, interp)
    workdir = directory / "build"
    workdir.mkdir()
    with disks.attach(workdir) as disk:
        disk.mount()
        (workdir / REQUIREMENTS_FILE).write_text(requirements)
        if seed.is_dir():
            shutil.copytree(seed, workdir / INSTALLER_CACHE)
        _install(confinement, place, interp, workdir, timeout_s, disk, show)
        try:
            copy_out(workdir / "venv", directory / "venv")
        except (OSError, RecursionError) as exc:  # a tree too deep, a name too long
            raise InstallFailed(
                f"installing requirements left an environment rgrid cannot copy ({exc})"
            ) from None


def _install(
    confinement: Confinement,
    place: BuildPlace,
    interp: Interpreter,
    workdir: Path,
    timeout_s: float,
    disk: WorkDisk,
    show: Callable[[str], None] | None,
) -> None:
    uv = uv_binary()
    home = confinement.sandbox.home(workdir)
    confinement.sandbox.prepare(workdir, place.user)
    job = Job(
        argv=installer_argv(uv, interp, home),
        workdir=workdir,
        env=installer_env(home, place.index_url),
        limits=confinement.limits,
        user=place.user,
        readonly=[Path(interp.prefix), uv, *operator_ca().values()],
        network=True,
        name=place.name,
        image=place.image,
        netns=place.netns,
        resolv_conf=place.resolv_conf,
    )
    tail = OutputTail(show)
    ended = confinement.run(job, place.name, timeout_s, tail.write, check=disk.exceeded)
    output = tail.text()
    if ended.outcome.stopped and ended.outcome.limit is None:
        raise InstallFailed("installing requirements was stopped")
    if ended.outcome.timed_out:
        raise InstallFailed(f"installing requirements took over {timeout_s:g} s", output=output)
    if ended.oom:
        memory_mb = confinement.limits.memory_bytes // 2**20
        raise InstallFailed(
            f"installing requirements ran out of memory ({memory_mb} MiB, the run's --memory)", output=output
        )
    if ended.outcome.exit_code != 0:
        full = ended.outcome.limit or disk.full()
        if full is not None:
            raise InstallFailed(
                f"installing requirements stopped: {full.replace('work dir', 'build')}", output=output
            )
        reason = users_fault(output)
        if reason is not None:
            raise InstallFailed(
                f"the requirements cannot be installed: {reason}", users_fault=True, output=output
            )
        raise InstallFailed(f"installing requirements failed (exit {ended.outcome.exit_code})", output=output)


class OutputTail:
    """The installer's last output (both streams), kept to show and to
    tell why it failed; passed on to `show` as it comes, if given."""

    def __init__(self, show: Callable[[str], None] | None = None, limit: int = 64 * 1024) -> None:
        self.show = show
        self.limit = limit
        self._parts: list[str] = []
        self._size = 0

    def write(self, _stream: Stream, text: str) -> None:
        if self.show is not None:
            self.show(text)
        self._parts.append(text)
        self._size += len(text)
        while self._size > self.limit and len(self._parts) > 1:
            self._size -= len(self._parts.pop(0))

    def text(self) -> str:
        return "".join(self._parts)


# uv's words for requirements that cannot be met, whoever asks...
_USERS_FAULT = (
    "No solution found",
    "not found in the package registry",
    "there is no version of",
    "unsatisfiable",
    "Failed to build",
    "Failed to parse",
    "status client error (404",
    "status client error (410",
)
# ... and for an index or network that did not answer.
_OUTAGE = (
    "error sending request",
    "dns error",
    "tcp connect error",
    "Connection refused",
    "Connection reset",
    "timed out",
    "status server error",
    # The operator's index refusing its credentials, or asking to slow down.
    "status client error (401",
    "status client error (403",
    "status client error (407",
    "status client error (408",
    "status client error (429",
)


def users_fault(output: str) -> str | None:
    """uv's own one-line reason, when the failure is the requirements' and
    not an outage on the way to the index."""
    if any(marker in output for marker in _OUTAGE) or not any(m in output for m in _USERS_FAULT):
        return None
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    because = [line for line in lines if "Because" in line]
    errors = [line for line in lines if line.lower().startswith(("error:", "×"))]
    chosen = (because or errors or [lines[-1]])[-1]
    return re.sub(r"^(cause:|error:|×|╰─▶)\s*", "", chosen)[:500]


def copy_out(source: Path, target: Path) -> None:
    """Copy what a build left, as root, without trusting it: directories,
    regular files (opened without following links) and symlinks (as links);
    nothing else (a FIFO would hang the copy, a device is not a package)."""
    if source.is_symlink() or not source.is_dir():
        raise InstallFailed("installing requirements left no environment")
    target.mkdir(mode=0o755)
    for entry in os.scandir(source):
        path, to = Path(entry.path), target / entry.name
        if entry.is_symlink():
            os.symlink(os.readlink(path), to)
        elif entry.is_dir(follow_symlinks=False):
            copy_out(path, to)
        elif entry.is_file(follow_symlinks=False):
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            with os.fdopen(fd, "rb") as src, open(to, "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.chmod(to, entry.stat(follow_symlinks=False).st_mode & 0o755)
