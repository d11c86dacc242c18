"""Per-attempt control groups: the memory, process-count and CPU limits
that the kernel enforces, and the record of why a script was killed.

Both cgroup v2 (one unified tree) and v1 (one tree per controller, as on
this project's machines) are supported. Where neither is writable the
runner falls back to rlimits (see `limits.py`) and says so.

The group is also what measures an attempt (`Cgroup.usage`): its CPU time
and its peak memory, as the kernel charged them to the limit the user set,
page cache included, since that is what `--memory` must hold.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from rgrid_runner.limits import Limits

log = logging.getLogger(__name__)

ROOT = Path("/sys/fs/cgroup")
GROUP = "rgrid"
CPU_PERIOD_US = 100_000


@dataclass(frozen=True)
class GroupUse:
    """What the kernel charged a group: CPU seconds and peak bytes of memory
    (either unknown where this kernel does not tell it)."""

    cpu_seconds: float | None
    peak_memory_bytes: int | None


def _write(path: Path, value: str) -> None:
    path.write_text(value)


class Cgroup:
    """One attempt's group in every controller it uses."""

    def __init__(self, dirs: dict[str, Path], v2: bool) -> None:
        self.dirs = dirs
        self.v2 = v2
        # The largest memory.current seen, for a v2 kernel without memory.peak (< 5.19).
        self._sampled_peak = 0

    def _read_int(self, controller: str, name: str) -> int | None:
        directory = self.dirs.get(controller)
        if directory is None:
            return None
        try:
            return int((directory / name).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def sample(self) -> None:
        """Note the memory in use now: the peak where the kernel keeps none."""
        if self.v2 and not (self.dirs["memory"] / "memory.peak").exists():
            self._sampled_peak = max(self._sampled_peak, self._read_int("memory", "memory.current") or 0)

    def usage(self) -> GroupUse | None:
        """CPU seconds and peak memory of everything that ran in the group,
        so far (read before `remove`); None where the kernel tells neither."""
        if self.v2:
            peak = self._read_int("memory", "memory.peak")
            cpu_us = None
            try:
                stat = (self.dirs["cpu"] / "cpu.stat").read_text()
                fields = dict(line.split(" ", 1) for line in stat.splitlines() if " " in line)
                cpu_us = int(fields["usage_usec"])
            except (OSError, ValueError, KeyError):
                pass
            cpu_s = None if cpu_us is None else cpu_us / 1e6
            peak = max(peak or 0, self._sampled_peak) or None
        else:
            peak = self._read_int("memory", "memory.max_usage_in_bytes")
            cpu_ns = self._read_int("cpuacct", "cpuacct.usage")
            cpu_s = None if cpu_ns is None else cpu_ns / 1e9
        if cpu_s is None and peak is None:
            return None
        return GroupUse(cpu_seconds=cpu_s, peak_memory_bytes=peak)

    def join_command(self, argv: list[str]) -> list[str]:
        """Wrap argv so the process enters the group before it execs: no
        code of the script ever runs outside its limits."""
        procs = sorted({str(d / "cgroup.procs") for d in self.dirs.values()})
        joins = "; ".join(f"echo $$ > {shlex.quote(p)}" for p in procs)
        return ["/bin/sh", "-c", f'{joins}; exec "$@"', "rgrid-join", *argv]

    def _members(self) -> set[int]:
        pids: set[int] = set()
        for d in self.dirs.values():
            try:
                pids.update(int(p) for p in (d / "cgroup.procs").read_text().split())
            except FileNotFoundError:
                continue
        return pids

    def oom_killed(self) -> bool:
        mem = self.dirs.get("memory")
        if mem is None:
            return False
        try:
            if self.v2:
                text = (mem / "memory.events").read_text()
            else:
                text = (mem / "memory.oom_control").read_text()
        except FileNotFoundError:
            return False
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and int(value) > 0:
                return True
        return False

    def hit_pid_limit(self) -> bool:
        pids = self.dirs.get("pids")
        if pids is None:
            return False
        try:
            text = (pids / "pids.events").read_text()
        except FileNotFoundError:
            return False
        return any(line.startswith("max ") and int(line.split()[1]) > 0 for line in text.splitlines())

    def kill_all(self) -> None:
        """SIGKILL every process still in the group (double-forked daemons too)."""
        for _ in range(50):
            members = self._members()
            if not members:
                return
            for pid in members:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.02)

    def remove(self) -> None:
        self.kill_all()
        for d in self.dirs.values():
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)


class CgroupManager:
    """Creates attempt groups under a `rgrid` group, if this host allows it."""

    def __init__(self, root: Path = ROOT) -> None:
        self.root = root
        self.v2 = (root / "cgroup.controllers").exists()
        self.available = self._probe()

    def _parent(self, controller: str) -> Path:
        return self.root / GROUP if self.v2 else self.root / controller / GROUP

    def _controllers(self) -> tuple[str, ...]:
        # v1 counts CPU time in a controller of its own, used where the host
        # mounts it (only a measure: its absence costs no limit); v2's
        # cpu.stat has it.
        if self.v2 or not (self.root / "cpuacct").is_dir():
            return ("memory", "pids", "cpu")
        return ("memory", "pids", "cpu", "cpuacct")

    def _probe(self) -> bool:
        try:
            for controller in self._controllers():
                parent = self._parent(controller)
                parent.mkdir(exist_ok=True)
                if self.v2:
                    _write(self.root / "cgroup.subtree_control", "+memory +pids +cpu")
                    _write(parent / "cgroup.subtree_control", "+memory +pids +cpu")
                    break
            return True
        except OSError as exc:
            log.info("cgroups not usable here (%s); limits fall back to rlimits", exc)
            return False

    def create(self, name: str, limits: Limits) -> Cgroup:
        dirs: dict[str, Path] = {}
        for controller in self._controllers():
            path = self._parent(controller) / name
            path.mkdir(exist_ok=True)
            dirs[controller] = path
        group = Cgroup(dirs, self.v2)
        try:
            self._apply(group, limits)
        except OSError:
            group.remove()
            raise
        return group

    def _apply(self, group: Cgroup, limits: Limits) -> None:
        quota = max(1000, int(limits.cpu * CPU_PERIOD_US))
        if self.v2:
            d = group.dirs["memory"]
            _write(d / "memory.max", str(limits.memory_bytes))
            _write(d / "memory.swap.max", "0")
            _write(d / "pids.max", str(limits.max_pids))
            _write(d / "cpu.max", f"{quota} {CPU_PERIOD_US}")
            return
        mem = group.dirs["memory"]
        _write(mem / "memory.limit_in_bytes", str(limits.memory_bytes))
        memsw = mem / "memory.memsw.limit_in_bytes"
        if memsw.exists():
            _write(memsw, str(limits.memory_bytes))
        _write(group.dirs["pids"] / "pids.max", str(limits.max_pids))
        _write(group.dirs["cpu"] / "cpu.cfs_period_us", str(CPU_PERIOD_US))
        _write(group.dirs["cpu"] / "cpu.cfs_quota_us", str(quota))
