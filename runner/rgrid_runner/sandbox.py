"""Where a script runs: one interface, three sandboxes, chosen per worker.

- bubblewrap: new mount, pid, ipc and uts namespaces, and the attempt's own
  network namespace (rgrid_runner.jobnet; none at all with network=none);
  the host is read-only and mostly invisible, the work dir is the only
  writable place besides a private /tmp; the script runs under the
  attempt's own uid (rgrid_runner.slots) without capabilities, with
  no_new_privs and the seccomp filter (rgrid_runner.seccomp); it dies with
  its runner.
- docker: `docker run` of the runtime's image with CPU, memory and pid
  limits, the work dir mounted, the attempt's uid and no privileges.
- process: a plain subprocess. No isolation at all: for machines with
  neither, and said so by `rgrid local status`.

Nothing the tenant chooses reaches a step that has privilege. bubblewrap
and setpriv start as root, so they are named by absolute path and run with
a fixed environment of two variables; the job's own variables (LD_PRELOAD
and PATH included) are set by `env -i`, which setpriv starts only after it
dropped to the job's uid and every capability (effective, permitted,
inheritable, ambient, bounding).

Limits that the kernel enforces through cgroups (memory, pids, CPU) are
applied around whichever sandbox runs; see task.py.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from rgrid_runner.jobnet import DOCKER_NETWORK
from rgrid_runner.limits import Limits
from rgrid_runner.seccomp import filter_fd, filter_program
from rgrid_runner.slots import JobUser
from rgrid_runner.systools import PRIVILEGED_ENV, found, system_tool

JOB_DIR = "/job"


# What of the host's /etc a job may read: name resolution, TLS roots, time
# zone. Nothing else (an operator may keep secrets in /etc); its passwd and
# group are its slot's own (rgrid_runner.slots).
ETC_ALLOWED = (
    "resolv.conf",
    "hosts",
    "nsswitch.conf",
    "host.conf",
    "localtime",
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "mime.types",
    "alternatives",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "os-release",
    "protocols",
    "services",
)
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32")


@dataclass(frozen=True)
class Job:
    """What to run, as the runner sees it on the host."""

    argv: list[str]
    workdir: Path
    env: dict[str, str]
    limits: Limits
    # The attempt's slot; None only for the unisolated process sandbox.
    user: JobUser | None = None
    readonly: list[Path] = field(default_factory=list)
    network: bool = True
    name: str = "rgrid-job"
    image: str | None = None
    # With network: the attempt's own namespace (rgrid_runner.jobnet) and the
    # resolv.conf naming the resolvers a job can reach from it.
    netns: Path | None = None
    resolv_conf: Path | None = None


@dataclass(frozen=True)
class Launch:
    """The host command that starts a job, and the files it inherits (the
    seccomp filter), which the caller closes once it started."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path
    pass_fds: tuple[int, ...] = ()

    def close(self) -> None:
        for fd in self.pass_fds:
            os.close(fd)


class Sandbox(Protocol):
    """How a worker isolates jobs: chosen once per node (`choose`), named by
    `rgrid local status`, used for every job and every requirements build."""

    name: str
    isolated: bool
    # True when a networked job needs the runner to give it a network
    # namespace of its own (Job.netns); Docker brings its own network.
    needs_netns: bool

    def prepare(self, workdir: Path, user: JobUser | None) -> None:
        """Make the work dir usable by the job's user."""

    def home(self, workdir: Path) -> str:
        """Where the job sees its work dir."""

    def launch(self, job: Job) -> Launch:
        """The host command that runs the job inside this sandbox."""


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    """Hand the work dir to the job's user, except read-only files: those
    are the input cache's objects (rgrid_runner.inputcache), linked in, and
    must stay the runner's."""
    os.chown(root, uid, gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.lstat(path).st_mode & 0o222:
                os.chown(path, uid, gid, follow_symlinks=False)


def _ancestors(paths: list[Path]) -> list[str]:
    """Parents of bind targets that bwrap would otherwise create with the
    host's modes (/root is 0700, which would lock the job out of its own
    interpreter). Created empty and traversable; the host's content of them
    stays invisible."""
    parents: set[str] = set()
    for path in paths:
        for parent in Path(path).parents:
            top = str(parent)
            if top in ("/", "/tmp") or any(top == d or top.startswith(d + "/") for d in SYSTEM_DIRS):
                continue
            parents.add(top)
    return sorted(parents, key=lambda p: p.count("/"))


def _user(user: JobUser | None) -> JobUser:
    if user is None:
        raise ValueError("an isolating sandbox runs a job only under its slot's uid")
    return user


def _hand_over(workdir: Path, user: JobUser | None) -> None:
    """The work dir becomes the slot's, and only the slot's."""
    slot = _user(user)
    _chown_tree(workdir, slot.uid, slot.gid)
    workdir.chmod(0o700)


class Bubblewrap:
    name = "bubblewrap"
    isolated = True
    needs_netns = True

    def __init__(self, bwrap: str) -> None:
        self.bwrap = bwrap
        self.setpriv = system_tool("setpriv")
        self.env = system_tool("env")
        self.nsenter = system_tool("nsenter")
        filter_program()  # fails here, at the node's start, if seccomp cannot be had

    def home(self, workdir: Path) -> str:
        return JOB_DIR

    def prepare(self, workdir: Path, user: JobUser | None) -> None:
        _hand_over(workdir, user)

    def launch(self, job: Job) -> Launch:
        user = _user(job.user)
        argv = [
            self.bwrap,
            "--die-with-parent",
            "--new-session",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--hostname",
            "rgrid",
        ]
        prefix: list[str] = []
        if not job.network:
            argv.append("--unshare-net")
        elif job.netns is None:
            raise ValueError("a networked job runs only in its own network namespace (jobnet)")
        else:
            # Enter the attempt's namespace first: the job's traffic then
            # passes the node's job-network rules, and loopback is its own.
            prefix = [self.nsenter, f"--net={job.netns}", "--"]
        for d in SYSTEM_DIRS:
            if os.path.islink(d):
                argv += ["--symlink", os.readlink(d), d]
            elif os.path.isdir(d):
                argv += ["--ro-bind", d, d]
        # bwrap would make /etc 0700 for the files bound below it: the job
        # could then resolve no name and trust no certificate.
        argv += ["--perms", "0755", "--dir", "/etc"]
        for name in ETC_ALLOWED:
            path = f"/etc/{name}"
            if name == "resolv.conf" and job.network and job.resolv_conf is not None:
                argv += ["--ro-bind", str(job.resolv_conf), path]
            elif os.path.exists(path):
                argv += ["--ro-bind", path, path]
        for accounts, path in ((user.passwd, "/etc/passwd"), (user.group, "/etc/group")):
            if accounts is not None:
                argv += ["--ro-bind", str(accounts), path]
        # /tmp first: binds below it (an env cache under the host's /tmp) go on top.
        argv += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp"]
        for ancestor in _ancestors(job.readonly):
            argv += ["--perms", "0755", "--dir", ancestor]
        for tree in job.readonly:
            argv += ["--ro-bind", str(tree), str(tree)]
        argv += ["--bind", str(job.workdir), JOB_DIR, "--chdir", JOB_DIR, "--clearenv"]
        for key, value in PRIVILEGED_ENV.items():
            argv += ["--setenv", key, value]
        seccomp = filter_fd()
        argv += [
            "--seccomp",
            str(seccomp),
            "--",
            self.setpriv,
            f"--reuid={user.uid}",
            f"--regid={user.gid}",
            "--clear-groups",
            "--no-new-privs",
            "--inh-caps=-all",
            "--ambient-caps=-all",
            "--bounding-set=-all",
            "--",
            # From here on the uid is the job's and no capability is left:
            # only now does the job's environment apply.
            self.env,
            "-i",
            "--",
            *(f"{key}={value}" for key, value in _job_environment(job).items()),
            *job.argv,
        ]
        return Launch(argv=[*prefix, *argv], env=dict(PRIVILEGED_ENV), cwd=job.workdir, pass_fds=(seccomp,))


def _job_environment(job: Job) -> dict[str, str]:
    return {**job.env, "HOME": JOB_DIR, "TMPDIR": "/tmp"}


class Docker:
    name = "docker"
    isolated = True
    needs_netns = False

    def __init__(self, docker: str) -> None:
        self.docker = docker

    def home(self, workdir: Path) -> str:
        return JOB_DIR

    def prepare(self, workdir: Path, user: JobUser | None) -> None:
        _hand_over(workdir, user)

    def launch(self, job: Job) -> Launch:
        """The engine applies the job's variables inside the container only;
        its default seccomp profile stays on."""
        user = _user(job.user)
        if job.image is None:
            raise ValueError("the docker sandbox needs an image for the runtime")
        memory = f"{job.limits.memory_bytes}b"
        argv = [
            self.docker,
            "run",
            "--rm",
            "--init",
            "--name",
            job.name,
            f"--cpus={job.limits.cpu:g}",
            f"--memory={memory}",
            f"--memory-swap={memory}",
            f"--pids-limit={job.limits.max_pids}",
            f"--user={user.uid}:{user.gid}",
            "--cap-drop=ALL",
            "--security-opt=no-new-privileges",
            "--read-only",
            "--tmpfs=/tmp:rw,nosuid,nodev",
            # The job network's bridge (rgrid_runner.jobnet): the node's rules
            # keep jobs off the node, the grid and private ranges.
            f"--network={DOCKER_NETWORK if job.network else 'none'}",
            f"--volume={job.workdir}:{JOB_DIR}:rw",
            *(f"--volume={tree}:{tree}:ro" for tree in job.readonly),
            f"--workdir={JOB_DIR}",
        ]
        for key, value in _job_environment(job).items():
            argv.append(f"--env={key}={value}")
        argv += [job.image, *job.argv]
        return Launch(argv=argv, env=dict(PRIVILEGED_ENV), cwd=job.workdir)


class Plain:
    name = "process"
    isolated = False
    needs_netns = False

    def home(self, workdir: Path) -> str:
        return str(workdir)

    def prepare(self, workdir: Path, user: JobUser | None) -> None:
        return None

    def launch(self, job: Job) -> Launch:
        return Launch(argv=job.argv, env={**job.env, "HOME": self.home(job.workdir)}, cwd=job.workdir)


def _bwrap_works(bwrap: str) -> bool:
    if os.geteuid() != 0:
        # Dropping the job to its own uid needs root; as an ordinary user the
        # job would share the runner's uid and could read the runner's files.
        return False
    try:
        return (
            subprocess.run(
                [bwrap, "--ro-bind", "/", "/", "--unshare-pid", "true"],
                capture_output=True,
                timeout=10,
                env=PRIVILEGED_ENV,
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def _docker_works(docker: str) -> bool:
    try:
        return (
            subprocess.run([docker, "info"], capture_output=True, timeout=10, env=PRIVILEGED_ENV).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def choose(wanted: str = "auto") -> Sandbox:
    """bubblewrap | docker | process, or auto: bubblewrap where it works,
    else docker where an engine answers, else a plain process."""
    wanted = wanted.lower()
    bwrap, docker = found("bwrap"), found("docker")
    if wanted in ("bubblewrap", "bwrap"):
        if not bwrap or not _bwrap_works(bwrap):
            raise RuntimeError("RGRID_SANDBOX=bubblewrap but bwrap is missing or cannot run here")
        return Bubblewrap(bwrap)
    if wanted == "docker":
        if not docker or not _docker_works(docker):
            raise RuntimeError("RGRID_SANDBOX=docker but no Docker engine answers")
        return Docker(docker)
    if wanted == "process":
        return Plain()
    if bwrap and _bwrap_works(bwrap):
        return Bubblewrap(bwrap)
    if docker and _docker_works(docker):
        return Docker(docker)
    return Plain()
