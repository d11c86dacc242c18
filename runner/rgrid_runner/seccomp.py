"""The seccomp filter every job and every requirements build runs under.

A job already runs as an unprivileged uid with no capabilities; the filter
is there so that the next kernel bug reachable from an ordinary process is
not a node takeover. It is a deny list in the spirit of Docker's default
profile, kept to the calls an ordinary program (Python, numpy, compilers,
subprocesses, threads) never needs and that have been the doors of past
escapes:

- no new namespaces: `unshare`, `setns`, and `clone` with any CLONE_NEW*
  flag are refused (unprivileged user namespaces are the largest attack
  surface an unprivileged process can reach); `clone3` answers ENOSYS, as
  in Docker, so C libraries fall back to `clone`, whose flags can be read;
- no mounts: `mount`, `umount2`, `pivot_root` and the new mount API;
- no kernel keyring (`keyctl`, `add_key`, `request_key`), no `bpf`, no
  `perf_event_open`, no `userfaultfd`, no `io_uring`;
- no kernel modules, `kexec`, `reboot`, swap, clock, accounting or quota
  calls, `iopl`/`ioperm`, `open_by_handle_at`.

Refused calls fail with EPERM, so programs see an ordinary error. Calls of
another architecture (32-bit calls on x86_64) kill the calling thread, the
libseccomp default. The filter is compiled once per process with the
system's libseccomp (ctypes, no new dependency) to classic BPF, which
bubblewrap loads (`--seccomp FD`) as its last step before the job starts.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from functools import cache

ACT_ALLOW = 0x7FFF0000
NR_UNKNOWN = -1  # libseccomp's __NR_SCMP_ERROR
CMP_MASKED_EQ = 7

DENIED = (
    "unshare",
    "setns",
    "mount",
    "umount2",
    "pivot_root",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "syslog",
    "quotactl",
    "quotactl_fd",
    "lookup_dcookie",
    "open_by_handle_at",
    "iopl",
    "ioperm",
    "uselib",
    "vhangup",
    "nfsservctl",
)

# clone(2)'s namespace flags; any one of them makes the call refused.
# (CLONE_NEWTIME is clone3's only: in clone's flags that bit is part of the
# exit signal, so it is not listed.)
CLONE_NAMESPACE_FLAGS = (
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
)


class SeccompUnavailable(RuntimeError):
    """libseccomp is not on this machine, or refused the filter."""


class _ArgCmp(ctypes.Structure):
    _fields_ = (
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    )


def _errno_action(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


def _library() -> ctypes.CDLL:
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as exc:
        raise SeccompUnavailable(f"libseccomp is not installed ({exc})") from None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = (ctypes.c_uint32,)
    lib.seccomp_release.argtypes = (ctypes.c_void_p,)
    lib.seccomp_syscall_resolve_name.argtypes = (ctypes.c_char_p,)
    lib.seccomp_rule_add_array.argtypes = (
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(_ArgCmp),
    )
    lib.seccomp_export_bpf.argtypes = (ctypes.c_void_p, ctypes.c_int)
    return lib


def _add(lib: ctypes.CDLL, ctx: int, action: int, name: str, *cmps: _ArgCmp) -> None:
    nr = lib.seccomp_syscall_resolve_name(name.encode())
    if nr == NR_UNKNOWN:
        return  # a call this libseccomp does not know: nothing to refuse
    array = (_ArgCmp * len(cmps))(*cmps) if cmps else None
    rc = lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), array)
    if rc < 0:
        raise SeccompUnavailable(f"libseccomp refused the rule for {name}: {os.strerror(-rc)}")


@cache
def filter_program() -> bytes:
    """The compiled filter (classic BPF, native architecture)."""
    lib = _library()
    ctx = lib.seccomp_init(ACT_ALLOW)
    if not ctx:
        raise SeccompUnavailable("seccomp_init failed")
    try:
        eperm = _errno_action(errno.EPERM)
        for name in DENIED:
            _add(lib, ctx, eperm, name)
        _add(lib, ctx, _errno_action(errno.ENOSYS), "clone3")
        for flag in CLONE_NAMESPACE_FLAGS:
            _add(lib, ctx, eperm, "clone", _ArgCmp(0, CMP_MASKED_EQ, flag, flag))
        out = os.memfd_create("rgrid-seccomp-export", os.MFD_CLOEXEC)
        try:
            rc = lib.seccomp_export_bpf(ctx, out)
            if rc < 0:
                raise SeccompUnavailable(f"exporting the filter failed: {os.strerror(-rc)}")
            return os.pread(out, os.fstat(out).st_size, 0)
        finally:
            os.close(out)
    finally:
        lib.seccomp_release(ctx)


def filter_fd() -> int:
    """A fresh file holding the filter, at offset 0, for one bubblewrap to
    read (handed over with pass_fds, so no other child inherits it); the
    caller closes it once bubblewrap started."""
    fd = os.memfd_create("rgrid-seccomp", os.MFD_CLOEXEC)
    os.write(fd, filter_program())
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
