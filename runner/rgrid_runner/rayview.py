"""Starts a Ray process as the Ray user, in its own view of the file system.

`python -m rgrid_runner.rayview SPEC -- ARGV...`, run as root (the spec
comes from rgrid_runner.rayuser.view_spec, never from a tenant or a Ray
process). In a private mount namespace, each directory the Ray user could
not enter is covered by an empty tmpfs showing only the trees Ray needs,
bound read-only. Then the process drops to the Ray user for good (no
supplementary group, no capability, no_new_privs) and execs ARGV: its pid
stays the same, so whoever started it can signal it as the program itself.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys

CLONE_NEWNS = 0x00020000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
PR_SET_NO_NEW_PRIVS = 38
PR_CAPBSET_DROP = 24
CAP_LAST_POSSIBLE = 64
O_PATH = 0o10000000

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(
        _libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {target}",
    )


def build_view(show: dict[str, list[str]]) -> None:
    """Cover each closed directory with a tmpfs showing only its trees.
    Nothing to cover (rgrid installed under /opt, a container): no mount
    namespace at all, which an unprivileged container could not make."""
    if not show:
        return
    _check(_libc.unshare(CLONE_NEWNS), "unshare")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    for hidden, trees in show.items():
        # Held open before the tmpfs covers them: bound from the fd after.
        fds = {tree: os.open(tree, O_PATH | os.O_DIRECTORY) for tree in trees}
        _mount("tmpfs", hidden, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
        for tree, fd in fds.items():
            os.makedirs(tree, mode=0o755, exist_ok=True)
            _mount(f"/proc/self/fd/{fd}", tree, None, MS_BIND | MS_REC)
            _mount(None, tree, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
            os.close(fd)
        _mount(None, hidden, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, "mode=0755")


def drop_to(uid: int, gid: int) -> None:
    """For good: no capability can come back, not even through a file's."""
    for cap in range(CAP_LAST_POSSIBLE):
        _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)  # EINVAL past the kernel's last: nothing to drop
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    if os.getresuid() != (uid, uid, uid):
        raise OSError("could not drop to the Ray user")


def main() -> None:
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        raise SystemExit("usage: python -m rgrid_runner.rayview SPEC -- ARGV...")
    spec, argv = json.loads(sys.argv[1]), sys.argv[3:]
    build_view(spec["show"])
    drop_to(spec["uid"], spec["gid"])
    os.chdir("/")
    env = dict(os.environ, HOME=spec["home"], USER=spec["user"], LOGNAME=spec["user"])
    os.execve(argv[0], argv, env)


if __name__ == "__main__":
    main()
