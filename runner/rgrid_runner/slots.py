"""One uid per concurrent attempt on a node.

Jobs of different tenants share a node. If they shared a uid, one could
signal, trace or read the files of another, and a process limit would count
all of them together. So each attempt claims a slot for as long as it runs
(its requirements build included): slot n runs as uid and gid
RGRID_JOB_UID_BASE + n, which no user of the node has. The claim is a
file lock in a directory of the node's (every Ray worker process of the
node sees it), so a crashed runner never holds a slot: the kernel drops
its lock. Nothing of the previous holder survives the slot: its processes
died with its cgroup and pid namespace, its work dir was removed, and a
build's output is handed to the runner's own uid before it is published.

The job sees a passwd and group file of its own naming only root, itself
and nobody: programs that look their user up work, and the node's accounts
stay invisible.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rgrid.filelock import FileLock


class NoFreeSlot(RuntimeError):
    """Every uid of the range is held by a running attempt."""


@dataclass(frozen=True)
class JobUser:
    """The unprivileged uid/gid one attempt runs as, and the account files
    its sandbox shows."""

    uid: int
    gid: int
    passwd: Path | None = None
    group: Path | None = None


def _account_files(directory: Path, uid: int, gid: int) -> tuple[Path, Path]:
    passwd, group = directory / f"{uid}.passwd", directory / f"{uid}.group"
    if not passwd.exists():
        text = (
            "root:x:0:0:root:/root:/usr/sbin/nologin\n"
            f"rgrid:x:{uid}:{gid}:rgrid job:/job:/bin/sh\n"
            "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        )
        _write_once(passwd, text)
    if not group.exists():
        _write_once(group, f"root:x:0:\nrgrid:x:{gid}:\nnogroup:x:65534:\n")
    return passwd, group


def _write_once(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{random.getrandbits(32):08x}")
    tmp.write_text(text)
    tmp.chmod(0o644)
    tmp.replace(path)


class JobSlots:
    """The node's range of job uids and who holds which."""

    def __init__(self, directory: Path, base_uid: int, count: int) -> None:
        if base_uid < 1000 or count < 1:
            raise ValueError("RGRID_JOB_UID_BASE must be 1000 or more and RGRID_JOB_SLOTS at least 1")
        self.directory = directory
        self.base_uid = base_uid
        self.count = count

    @contextmanager
    def claim(self) -> Iterator[JobUser]:
        """Hold a free slot for the block; NoFreeSlot if all are taken."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o755)
        start = random.randrange(self.count)
        for i in range(self.count):
            slot = (start + i) % self.count
            lock = FileLock(self.directory / f"{slot}.lock")
            if not lock.acquire(wait=False):
                continue
            try:
                uid = self.base_uid + slot
                passwd, group = _account_files(self.directory, uid, uid)
                yield JobUser(uid=uid, gid=uid, passwd=passwd, group=group)
                return
            finally:
                lock.release()
        raise NoFreeSlot(f"all {self.count} job uids of this node are in use")
