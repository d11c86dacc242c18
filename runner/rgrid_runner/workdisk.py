"""A work dir with a size the kernel enforces: bytes and files.

A job could fill the node's disk, or its inode table with a million empty
files, and stop every other job on the node. Measuring the work dir now and
then (du) sees that too late and costs a walk of the tree each time, and
this kernel has no quotas (CONFIG_QFMT_V2 is off; tmpfs and XFS quotas too),
so each attempt gets a file system of its own:

- **ext4 on a loop device**, formatted per attempt with about
  RGRID_MAX_WORKDIR_INODES inodes (mkfs rounds up to whole inode tables)
  and room for RGRID_MAX_WORKDIR_BYTES,
  in a sparse image under the work root (it takes on the node's disk only
  what the job wrote). No journal; its inode tables are never zeroed
  (`lazy_itable_init`, `noinit_itable`), so formatting takes ~10 ms and is
  done ahead, off the attempt's path: an attempt process formats its disk
  while it waits as the attempt service's spare (rgrid_runner.attemptproc).
  Unmounting comes after the report.
- **overlayfs on top**: the inputs are hard links into the node's input
  cache (rgrid_runner.inputcache), on the node's own file system, as the
  lower layer; everything the job writes goes to the upper layer on its
  own ext4. Inputs cost no copy and no room in the job's limit.
- Loop devices are set up with ioctls and both file systems mounted with
  mount(2) from the runner itself: no helper process on the attempt's
  path (~2 ms). The loop device clears itself when the file system is
  unmounted (LO_FLAGS_AUTOCLEAR).

A job that fills its file system sees ENOSPC like on any full disk; the
runner stops it and says which limit it reached. Where the runner is not
root or the node lacks loop devices, mkfs.ext4 or overlayfs (the process
sandbox on a laptop), the work dir is a plain directory measured every few
seconds (limits.WorkdirWatch); the runner logs which of the two it uses.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import shutil
import struct
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rgrid_runner.limits import WorkdirWatch
from rgrid_runner.systools import PRIVILEGED_ENV, found

log = logging.getLogger(__name__)

LOOP_CONTROL = "/dev/loop-control"
LOOP_CTL_GET_FREE = 0x4C82
LOOP_CONFIGURE = 0x4C0A
LO_FLAGS_AUTOCLEAR = 4
MS_NOSUID = 0x2
MS_NODEV = 0x4
MNT_DETACH = 0x2
INODE_BYTES = 256
# Room for ext4's own metadata beside the job's bytes and inode tables.
SLACK_BYTES = 8 * 2**20
# Below this much free room (or no free inode) the disk is full.
FULL_BELOW_BYTES = 2**20


@dataclass(frozen=True)
class DiskLimits:
    """What one attempt's work dir may hold (RGRID_MAX_WORKDIR_BYTES/_INODES)."""

    max_bytes: int
    max_inodes: int


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
    libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
    return libc


def _mount(source: str, target: Path, fstype: str, options: str) -> None:
    if _libc().mount(
        source.encode(), str(target).encode(), fstype.encode(), MS_NOSUID | MS_NODEV, options.encode()
    ):
        code = ctypes.get_errno()
        raise OSError(code, f"mounting {fstype} on {target}: {os.strerror(code)}")


def _unmount(target: Path) -> None:
    if _libc().umount2(str(target).encode(), MNT_DETACH):
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOENT):  # not mounted (any more)
            log.warning("cannot unmount %s: %s", target, os.strerror(code))


def _loop_device(image: Path) -> tuple[str, int]:
    """A free loop device backed by `image`, cleared when unmounted: its path
    and an open descriptor the caller closes once the file system is mounted."""
    control = os.open(LOOP_CONTROL, os.O_RDWR | os.O_CLOEXEC)
    try:
        for _ in range(32):
            number = fcntl.ioctl(control, LOOP_CTL_GET_FREE)
            device = f"/dev/loop{number}"
            device_fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
            image_fd = os.open(image, os.O_RDWR | os.O_CLOEXEC)
            try:
                info = struct.pack(
                    "5Q4I64s64s32s2Q", 0, 0, 0, 0, 0, 0, 0, 0, LO_FLAGS_AUTOCLEAR, b"", b"", b"", 0, 0
                )
                fcntl.ioctl(device_fd, LOOP_CONFIGURE, struct.pack("II", image_fd, 0) + info + bytes(64))
                return device, device_fd
            except OSError as exc:
                os.close(device_fd)
                if exc.errno != errno.EBUSY:  # another process took this device first
                    raise
            finally:
                os.close(image_fd)
        raise OSError(errno.EBUSY, "no free loop device")
    finally:
        os.close(control)


def _mounts() -> list[tuple[Path, str, str]]:
    """(mount point, file system type, source) of every mount we see."""
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        before, _, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if len(fields) >= 5 and len(tail) >= 2:
            point = fields[4].replace("\\040", " ")
            mounts.append((Path(point), tail[0], tail[1]))
    return mounts


def _overlay_ready() -> bool:
    """overlayfs is known to the kernel, loading its module if need be
    (Debian's kernels build it as a module, loaded on first use)."""
    if "overlay" in Path("/proc/filesystems").read_text():
        return True
    modprobe = found("modprobe")
    if modprobe is not None:
        subprocess.run([modprobe, "overlay"], capture_output=True, env=PRIVILEGED_ENV, timeout=30)
    return "overlay" in Path("/proc/filesystems").read_text()


def _image_of(device: str) -> Path | None:
    """The image file behind a loop device, if it is one."""
    backing = Path("/sys/block") / Path(device).name / "loop" / "backing_file"
    try:
        return Path(backing.read_text().strip().removesuffix(" (deleted)"))
    except OSError:
        return None


def _maker_alive(image: Path) -> bool:
    """Whether the runner process that made an image lives (images are
    named after their maker's pid)."""
    pid = image.name.split("-", 1)[0]
    return not pid.isdigit() or os.path.exists(f"/proc/{pid}")


class WorkDisks:
    """The node's per-attempt file systems (a job's work dir, a requirements
    build), made by this runner process: their images live in `images`."""

    def __init__(self, images: Path, limits: DiskLimits) -> None:
        self.images = images
        self.limits = limits
        self.mkfs = found("mkfs.ext4")
        self.available = (
            os.geteuid() == 0 and self.mkfs is not None and os.path.exists(LOOP_CONTROL) and _overlay_ready()
        )
        self._spare: Path | None = None
        self._lock = threading.Lock()
        if self.available:
            log.info(
                "work dirs: a file system each (%d bytes, %d files)", limits.max_bytes, limits.max_inodes
            )
            images.mkdir(parents=True, exist_ok=True)
            images.chmod(0o700)
            self._sweep()
        else:
            log.info("work dirs: plain directories measured every few seconds (not root, or no loop devices)")

    def _sweep(self) -> None:
        """What runner processes that died (SIGKILL, a node crash) left
        behind: their attempts' mounts and dirs, then their images."""
        for point, fstype, source in _mounts():
            if fstype != "ext4" or not point.name.endswith(".disk"):
                continue
            image = _image_of(source)
            if image is None or image.parent != self.images or _maker_alive(image):
                continue
            workdir = point.with_name(point.name.removesuffix(".disk"))
            log.info("removing the work disk of %s, left by a runner that died", workdir.name)
            _unmount(workdir)
            _unmount(point)
            for leftover in (point, workdir, workdir.with_name(workdir.name + ".in")):
                shutil.rmtree(leftover, ignore_errors=True)
        for image in self.images.glob("*.img"):
            pid = image.name.split("-", 1)[0]
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                image.unlink(missing_ok=True)

    def _format(self) -> Path:
        image = self.images / f"{os.getpid()}-{uuid.uuid4().hex[:12]}.img"
        size = self.limits.max_bytes + self.limits.max_inodes * INODE_BYTES + SLACK_BYTES
        with open(image, "wb") as fh:
            fh.truncate(size)
        subprocess.run(
            [
                str(self.mkfs),
                "-q",
                "-F",
                "-m",
                "0",
                "-N",
                str(self.limits.max_inodes),
                "-O",
                "^has_journal",
                "-E",
                "lazy_itable_init=1,nodiscard",
                str(image),
            ],
            check=True,
            capture_output=True,
            env=PRIVILEGED_ENV,
            timeout=60,
        )
        return image

    def take(self) -> Path:
        """A formatted image: the spare made ahead, or one made now."""
        with self._lock:
            image, self._spare = self._spare, None
        if image is None or not image.exists():
            image = self._format()
        return image

    def prepare(self) -> None:
        """Sweep what dead runners left and format the next attempt's disk:
        called while an attempt process waits for its order, so it competes
        with no job's start."""
        if not self.available:
            return
        self._sweep()
        try:
            spare = self._format()
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("cannot format a spare work disk: %s", exc)
            return
        with self._lock:
            if self._spare is None:
                self._spare = spare
                return
        spare.unlink(missing_ok=True)

    @contextlib.contextmanager
    def attach(self, workdir: Path) -> Iterator[WorkDisk]:
        """The work dir's disk for the block, unmounted and removed after it.
        Two steps inside: put the inputs in `inputs_dir`, then `mount()`."""
        disk = WorkDisk(self, workdir)
        try:
            yield disk
        finally:
            disk.close()


class WorkDisk:
    """One attempt's work dir: inputs go to `inputs_dir`, then `mount()`
    puts the job's own file system over them at the work dir."""

    def __init__(self, disks: WorkDisks, workdir: Path) -> None:
        self.disks = disks
        self.workdir = workdir
        self.enforced = disks.available
        self.watch = None if self.enforced else WorkdirWatch(workdir, disks.limits.max_bytes)
        self.inputs_dir = workdir.with_name(workdir.name + ".in") if self.enforced else workdir
        self.disk = workdir.with_name(workdir.name + ".disk")
        self.image: Path | None = None
        self.mounted: list[Path] = []
        if self.enforced:
            self.inputs_dir.mkdir(mode=0o755)

    def mount(self) -> None:
        """The job's file system over its inputs, at the work dir."""
        if not self.enforced:
            return
        self.image = self.disks.take()
        self.disk.mkdir(mode=0o700)
        device, device_fd = _loop_device(self.image)
        try:
            _mount(device, self.disk, "ext4", "noinit_itable")
        finally:
            os.close(device_fd)
        self.mounted.append(self.disk)
        (self.disk / "upper").mkdir()
        (self.disk / "work").mkdir()
        options = f"lowerdir={self.inputs_dir},upperdir={self.disk / 'upper'},workdir={self.disk / 'work'}"
        _mount("overlay", self.workdir, "overlay", options)
        self.mounted.append(self.workdir)

    def exceeded(self) -> str | None:
        """Which limit the job reached, if any (cheap: one statvfs)."""
        if self.watch is not None:
            return self.watch.exceeded()
        return self.full()

    def full(self) -> str | None:
        """Whether the job's file system is full, and of what."""
        if not self.mounted:
            return None
        st = os.statvfs(self.disk)
        if st.f_favail == 0:
            return f"its work dir reached its limit of {self.disks.limits.max_inodes} files"
        if st.f_bavail * st.f_frsize < FULL_BELOW_BYTES:
            return f"its work dir reached its limit of {self.disks.limits.max_bytes} bytes"
        return None

    def close(self) -> None:
        """Unmount and remove it all; runs after the attempt reported."""
        for target in reversed(self.mounted):
            _unmount(target)
        self.mounted.clear()
        if self.image is not None:
            self.image.unlink(missing_ok=True)
        if self.enforced:
            shutil.rmtree(self.disk, ignore_errors=True)
            shutil.rmtree(self.inputs_dir, ignore_errors=True)
