"""The dependency environment cache: one build per key under concurrency,
eviction by bytes, and nothing published that a build could still change
or that another tenant could write. The builder here lays out a tree
directly; the real one (rgrid_runner.build) runs uv in the job's sandbox
and is exercised in tests/integration/test_build_sandbox.py."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from rgrid_runner.envs import Builder, EnvCache, InstallFailed, seal
from rgrid_runner.runtimes import detect

INTERP = detect()["python:3.11"]


def layout(size: int) -> tuple[list[str], Builder]:
    """A builder that lays out a venv of about `size` bytes, and its log."""
    built: list[str] = []

    def build(home: Path) -> None:
        (home / "venv" / "bin").mkdir(parents=True)
        (home / "venv" / "bin" / "python").symlink_to(INTERP.executable)
        (home / "venv" / "payload").write_bytes(os.urandom(size))
        built.append(home.name)

    return built, build


def test_least_recently_used_is_evicted_by_bytes_but_never_one_in_use(tmp_path: Path) -> None:
    cache = EnvCache(tmp_path, max_bytes=300_000, max_files=10**6)
    _, build = layout(200_000)
    with cache.use(INTERP, "a\n", build) as env_a, cache.use(INTERP, "b\n", build) as env_b:
        assert Path(env_a.path).exists()  # in use: kept although over the bound
        assert Path(env_b.path).exists()
    with cache.use(INTERP, "c\n", build) as env_c:
        assert Path(env_c.path).exists()
    assert not Path(env_a.path).exists() and not Path(env_b.path).exists()
    small = EnvCache(tmp_path / "roomy", max_bytes=10_000_000, max_files=10**6)
    for key in ("a\n", "b\n", "c\n"):
        with small.use(INTERP, key, build) as env:
            kept = env.path
    assert len([p for p in (tmp_path / "roomy").iterdir() if p.is_dir() and not p.name.startswith(".")]) == 3
    assert kept.exists()


def test_one_key_builds_once_under_concurrency(tmp_path: Path) -> None:
    cache = EnvCache(tmp_path, max_bytes=10**9, max_files=10**6)
    built, build = layout(10)
    barrier = threading.Barrier(3)

    def use() -> None:
        barrier.wait()
        with cache.use(INTERP, "same\n", build):
            pass

    threads = [threading.Thread(target=use) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(built) == 1
    assert len([p for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith(".")]) == 1


def test_a_failed_or_hollow_build_is_never_cached(tmp_path: Path) -> None:
    cache = EnvCache(tmp_path, max_bytes=10**9, max_files=10**6)

    def fails(home: Path) -> None:
        (home / "venv" / "bin").mkdir(parents=True)
        raise InstallFailed("installing requirements failed (exit 1)")

    def links_elsewhere(home: Path) -> None:
        (home / "venv").symlink_to("/etc")

    for build, message in ((fails, "exit 1"), (links_elsewhere, "left no environment")):
        with pytest.raises(InstallFailed, match=message), cache.use(INTERP, "x\n", build):
            pass
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == []


@pytest.mark.skipif(os.geteuid() != 0, reason="handing a tree from a job uid to the runner needs root")
def test_published_environment_is_the_runners_and_read_only_to_others(tmp_path: Path) -> None:
    tree = tmp_path / "venv"
    (tree / "lib").mkdir(parents=True)
    open_file, setuid_file, link = tree / "lib" / "open.py", tree / "lib" / "su", tree / "lib" / "shadow"
    open_file.write_text("x")
    setuid_file.write_text("y")
    link.symlink_to("/etc/shadow")
    os.chmod(open_file, 0o666)
    os.chmod(setuid_file, 0o4777)
    os.chmod(tree / "lib", 0o777)
    for path in (tree, tree / "lib", open_file, setuid_file):
        os.chown(path, 200_001, 200_001)
    os.lchown(link, 200_001, 200_001)
    seal(tree)
    for path in (tree, tree / "lib", open_file, setuid_file):
        st = os.lstat(path)
        assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
        assert not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH | stat.S_ISUID | stat.S_ISGID), oct(st.st_mode)
    assert os.lstat(link).st_uid == os.getuid() and os.readlink(link) == "/etc/shadow"
    assert stat.S_IMODE(os.stat("/etc/shadow").st_mode) != 0o755  # the link's target was never touched


def test_waiting_for_another_runs_build_ends_at_a_cancel(tmp_path: Path) -> None:
    """One run builds a key; another run with the same key waits for it,
    until it is cancelled: then it stops waiting at once."""
    cache = EnvCache(tmp_path, max_bytes=10**9, max_files=10**6)
    building, release = threading.Event(), threading.Event()

    def slow_build(home: Path) -> None:
        building.set()
        release.wait(30)
        layout(10)[1](home)

    def first_run() -> None:
        with cache.use(INTERP, "k\n", slow_build):
            pass

    first = threading.Thread(target=first_run)
    first.start()
    assert building.wait(30)
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    with (
        pytest.raises(InstallFailed, match="stopped while another run"),
        cache.use(INTERP, "k\n", layout(10)[1], stop),
    ):
        pass
    release.set()
    first.join(30)


def test_a_build_cannot_make_the_runner_write_through_its_links(tmp_path: Path) -> None:
    """Every name in a built tree is the build's: links planted where the
    cache once kept its markers, or anywhere, are copied as links and never
    written through, on publishing, use or eviction."""
    victim = tmp_path / "victim"
    victim.write_text("IMPORTANT ROOT FILE")
    missing = tmp_path / "created-by-root"
    cache = EnvCache(tmp_path / "envs", max_bytes=1, max_files=10**6)

    def planting(home: Path) -> None:
        layout(10)[1](home)
        for name in (".rgrid-used", ".rgrid-bytes", "bin/activate", "k.used", "k.usage"):
            (home / "venv" / name).unlink(missing_ok=True)
            (home / "venv" / name).symlink_to(victim if "bytes" in name or "usage" in name else missing)

    for key in ("a\n", "b\n"):  # the second evicts the first (max_bytes=1)
        with cache.use(INTERP, key, planting):
            pass
    assert victim.read_text() == "IMPORTANT ROOT FILE"
    assert not missing.exists()


def test_empty_files_are_not_free(tmp_path: Path) -> None:
    """A build of many empty files is charged a block and an entry each, so
    the cache's file bound evicts it."""

    def empties(home: Path) -> None:
        layout(0)[1](home)
        for i in range(3000):
            (home / "venv" / f"e{i}").touch()

    cache = EnvCache(tmp_path, max_bytes=10**12, max_files=4000)
    with cache.use(INTERP, "a\n", empties) as first:
        pass
    usage = [int(v) for v in (tmp_path / (first.path.name + ".usage")).read_text().split()]
    assert usage[0] >= 3000 * 4096 and usage[1] >= 3000
    with cache.use(INTERP, "b\n", empties):
        pass
    assert not first.path.exists()  # 6000 files > 4000: the older one went
