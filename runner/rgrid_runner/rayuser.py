"""The unprivileged account every Ray process of a node runs as.

Whoever holds the grid's Ray token can run code in Ray's processes on any
node: that is what a Ray cluster is. So Ray must hold nothing beyond the
work that runs on it. On a node started as root, the raylet, its workers,
the GCS, the dashboard and the API's driver run as this account (created
on first use as a system user), with no capability and no_new_privs. What
needs root (the job's network, its cgroup, its sandbox under the slot's
uid) is asked of the node's attempt service (rgrid_runner.attemptservice),
which checks every request.

Ray must still read its Python. Where the interpreter or the environment
lies below a directory only root may enter (pyenv under /root), Ray runs in
a mount namespace of its own in which that directory is an empty tmpfs
showing just those trees, read-only (rgrid_runner.rayview). Nothing else of
it is visible: a local grid's RGRID_HOME under /root stays out of sight as
well as out of reach.

A process that is not root has no privilege to lose: Ray then runs as its
caller, as before.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from rgrid.filelock import FileLock
from rgrid_runner.systools import PRIVILEGED_ENV, system_tool

# Creating the account is serialised: the local grid starts several agents at once.
CREATE_LOCK = Path("/run/rgrid-ray-user.lock")
# The packages Ray's processes import from wherever they are installed.
PACKAGES = ("rgrid", "rgrid_runner", "rgrid_api", "rgrid_infra")


@dataclass(frozen=True)
class RayAccount:
    name: str
    uid: int
    gid: int
    home: str


def ray_account(name: str) -> RayAccount | None:
    """The account Ray runs as (created if missing); None when this process
    is not root."""
    if os.geteuid() != 0:
        return None
    entry = _lookup(name)
    if entry is None:
        lock = FileLock(CREATE_LOCK)
        with lock.hold():
            entry = _lookup(name) or _create(name)
    if entry.pw_uid == 0 or entry.pw_gid == 0:
        raise ValueError(f"RGRID_RAY_USER={name} is root: Ray must run as an unprivileged account")
    return RayAccount(name, entry.pw_uid, entry.pw_gid, entry.pw_dir)


def _lookup(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def _create(name: str) -> pwd.struct_passwd:
    made = subprocess.run(
        [
            system_tool("useradd"),
            "--system",
            "--user-group",
            "--create-home",
            "--home-dir",
            f"/var/lib/{name}",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ],
        capture_output=True,
        text=True,
        env=PRIVILEGED_ENV,
    )
    entry = _lookup(name)
    if entry is None:
        raise RuntimeError(f"cannot create the Ray user {name}: {made.stderr.strip()[:300]}")
    return entry


def give_dir(account: RayAccount | None, path: Path) -> None:
    """A directory Ray writes in (its temp dir), made and handed to it.

    Root never follows what the Ray user may have put there: a symlink or a
    file in its place, or a directory someone else owns (an earlier Ray that
    ran as root), is moved aside and removed, and a fresh directory made.
    Old sessions are worth nothing to a new raylet."""
    if account is None:
        path.mkdir(parents=True, exist_ok=True)
        return
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None and not (stat.S_ISDIR(st.st_mode) and st.st_uid == account.uid):
        aside = path.with_name(f".{path.name}.old-{os.getpid()}-{time.monotonic_ns()}")
        os.rename(path, aside)  # renames a symlink itself, never its target
        if os.path.islink(aside) or not os.path.isdir(aside):
            os.unlink(aside)
        else:
            shutil.rmtree(aside, ignore_errors=True)
        st = None
    if st is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(path, 0o700)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            os.fchown(fd, account.uid, account.gid)
            os.fchmod(fd, 0o700)
        finally:
            os.close(fd)


def _python_trees() -> list[Path]:
    """What Ray's processes must read: the interpreter, the environment,
    and rgrid's packages (an editable install keeps them elsewhere)."""
    trees = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve()}
    for package in PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.origin:
            trees.add(Path(spec.origin).resolve().parent.parent)
    return sorted(t for t in trees if not any(o != t and o in t.parents for o in trees))


def _closed_ancestor(tree: Path) -> Path | None:
    """The topmost ancestor others may not enter, if there is one."""
    for parent in reversed(tree.parents):
        if parent != Path("/") and not parent.stat().st_mode & 0o001:
            return parent
    return None


def view_spec(account: RayAccount) -> dict:
    """Who Ray runs as, and which closed directories it sees as tmpfs
    holding only the trees below them that Ray needs."""
    shown: dict[str, list[str]] = {}
    for tree in _python_trees():
        closed = _closed_ancestor(tree)
        if closed is not None:
            shown.setdefault(str(closed), []).append(str(tree))
    hidden = sorted(shown, key=lambda p: p.count("/"))
    # A closed directory inside another is covered by the outer tmpfs.
    outer = [h for h in hidden if not any(o != h and h.startswith(o + "/") for o in hidden)]
    show = {o: sorted(t for h in hidden if h == o or h.startswith(o + "/") for t in shown[h]) for o in outer}
    return {"uid": account.uid, "gid": account.gid, "home": account.home, "user": account.name, "show": show}


def as_ray_user(account: RayAccount | None, argv: list[str]) -> list[str]:
    """The command that runs argv as the Ray user in its view (argv itself
    when not root)."""
    if account is None:
        return argv
    spec = json.dumps(view_spec(account), separators=(",", ":"))
    return [sys.executable, "-m", "rgrid_runner.rayview", spec, "--", *argv]


# What of its starter's environment a Ray process may inherit: Ray's own
# settings and the basics of a process. Everything else (a server's
# database password, a developer's cloud keys in the local grid's shell)
# stays out of Ray's reach, whatever its name.
INHERITED = frozenset(
    {"PATH", "LANG", "LANGUAGE", "TZ", "TMPDIR", "LD_LIBRARY_PATH", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"}
)


def inherited_by_ray(environ: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in environ.items() if k in INHERITED or k.startswith(("RAY_", "LC_"))}


def with_ray_token(env: dict[str, str], token: str) -> dict[str, str]:
    """A Ray process's environment with the grid's Ray token by value: as
    the Ray user it cannot read a token file kept for root, and the token is
    Ray's own secret, which every Ray process holds anyway. By value also
    when not root: a rotated token is the agent's or the server's to give."""
    out = {k: v for k, v in env.items() if k != "RAY_AUTH_TOKEN_PATH"}
    out["RAY_AUTH_TOKEN"] = token
    return out
