"""What the runner measures and lists for an attempt, on trees laid out as
the kernel and installers lay them out: a cgroup's counters (v1 and v2,
and a v2 kernel without memory.peak), and an environment's package set,
read from its metadata directories' names without following a link a
build left."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from rgrid_runner.cgroups import Cgroup
from rgrid_runner.envs import EnvCache
from rgrid_runner.packages import installed
from rgrid_runner.runtimes import Interpreter


def test_a_v1_group_reports_cpuacct_time_and_the_peak(tmp_path: Path) -> None:
    memory, cpuacct = tmp_path / "memory", tmp_path / "cpuacct"
    memory.mkdir()
    cpuacct.mkdir()
    (memory / "memory.max_usage_in_bytes").write_text("314572800\n")
    (cpuacct / "cpuacct.usage").write_text("1500000000\n")
    used = Cgroup({"memory": memory, "cpuacct": cpuacct, "cpu": tmp_path / "cpu"}, v2=False).usage()
    assert used is not None and used.cpu_seconds == 1.5 and used.peak_memory_bytes == 300 * 2**20


def test_a_v2_group_reports_cpu_stat_and_memory_peak(tmp_path: Path) -> None:
    (tmp_path / "memory.peak").write_text("1048576\n")
    (tmp_path / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n")
    used = Cgroup({"memory": tmp_path, "pids": tmp_path, "cpu": tmp_path}, v2=True).usage()
    assert used is not None and used.cpu_seconds == 2.5 and used.peak_memory_bytes == 2**20


def test_without_memory_peak_the_largest_sample_is_the_peak(tmp_path: Path) -> None:
    (tmp_path / "cpu.stat").write_text("usage_usec 10\n")
    group = Cgroup({"memory": tmp_path, "pids": tmp_path, "cpu": tmp_path}, v2=True)
    for now in ("100", "700", "300"):
        (tmp_path / "memory.current").write_text(now)
        group.sample()
    used = group.usage()
    assert used is not None and used.peak_memory_bytes == 700


def test_a_group_whose_counters_are_gone_reports_nothing(tmp_path: Path) -> None:
    assert Cgroup({"memory": tmp_path / "gone", "cpuacct": tmp_path / "gone"}, v2=False).usage() is None


def _dist(site: Path, name: str) -> None:
    (site / name).mkdir(parents=True)


def test_the_package_set_is_every_distribution_by_its_canonical_name(tmp_path: Path) -> None:
    site = tmp_path / "lib" / "python3.11" / "site-packages"
    _dist(site, "tomli_w-1.0.0.dist-info")
    _dist(site, "Markup.Safe-2.1.5.dist-info")
    _dist(site, "PyYAML-6.0-py3.11.egg-info")
    _dist(site, "cryptography.egg-info")  # no version: not a distribution it can pin
    _dist(site, "tomli_w")  # the package itself
    (site / "stray-1.0.dist-info").write_text("a file, not a directory")
    outside = tmp_path / "outside"
    _dist(outside, "secret-9.9.dist-info")
    os.symlink(outside / "secret-9.9.dist-info", site / "linked-1.0.dist-info")
    assert installed(tmp_path) == ["markup-safe==2.1.5", "pyyaml==6.0", "tomli-w==1.0.0"]


def test_a_site_directory_that_is_a_link_is_not_read(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    _dist(elsewhere, "planted-1.0.dist-info")
    (tmp_path / "env" / "lib" / "python3.11").mkdir(parents=True)
    os.symlink(elsewhere, tmp_path / "env" / "lib" / "python3.11" / "site-packages")
    assert installed(tmp_path / "env") == []


def test_a_link_at_any_depth_of_the_site_path_is_not_followed(tmp_path: Path) -> None:
    """A build names every entry of its tree: `lib` or `python3.11` planted
    as links to another environment must not make root list it."""
    elsewhere = tmp_path / "other-env"
    _dist(elsewhere / "lib" / "python3.11" / "site-packages", "tenantb_secret-1.0.dist-info")
    linked_lib = tmp_path / "a"
    linked_lib.mkdir()
    os.symlink(elsewhere / "lib", linked_lib / "lib")
    assert installed(linked_lib) == []
    linked_python = tmp_path / "b"
    (linked_python / "lib").mkdir(parents=True)
    os.symlink(elsewhere / "lib" / "python3.11", linked_python / "lib" / "python3aN")
    assert installed(linked_python) == []
    assert installed(elsewhere) == ["tenantb-secret==1.0"]  # what they would have shown


def test_a_published_environment_carries_its_package_set(tmp_path: Path) -> None:
    cache = EnvCache(tmp_path / "envs", max_bytes=10**9, max_files=10**6)
    interp = Interpreter("python:3.11", "/usr/bin/python3.11", "/usr", "CPython 3.11.2")

    def build(directory: Path) -> None:
        venv = directory / "venv"
        (venv / "bin").mkdir(parents=True)
        (venv / "bin" / "python").symlink_to("/usr/bin/python3.11")
        _dist(venv / "lib" / "python3.11" / "site-packages", "tomli_w-1.2.0.dist-info")

    with cache.use(interp, "tomli-w\n", build, threading.Event()) as env:
        assert env.packages == ("tomli-w==1.2.0",)
    # Listed once, at publication: a later use reads the list beside it.
    marks = list((tmp_path / "envs").glob("*.packages"))
    assert [m.read_text() for m in marks] == ["tomli-w==1.2.0"]
    marks[0].unlink()  # an environment published before rgrid listed them
    with cache.use(interp, "tomli-w\n", build, threading.Event()) as env:
        assert env.packages == ("tomli-w==1.2.0",)
