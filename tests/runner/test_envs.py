"""The dependency environment cache with real uv (requirements without
packages, so no index is needed)."""

from __future__ import annotations

import threading
from pathlib import Path

from rgrid_runner.envs import EnvCache
from rgrid_runner.runtimes import detect


def test_least_recently_used_is_evicted_but_never_one_in_use(tmp_path: Path) -> None:
    interp = detect()["python:3.11"]
    cache = EnvCache(tmp_path, max_envs=1)
    lines: list[str] = []
    with cache.use(interp, "# a\n", lines.append) as env_a:
        assert Path(env_a.python).exists()
        with cache.use(interp, "# b\n", lines.append) as env_b:
            assert Path(env_a.python).exists()  # in use: kept although over the bound
            assert Path(env_b.python).exists()
    with cache.use(interp, "# c\n", lines.append) as env_c:
        assert Path(env_c.python).exists()
    assert not Path(env_a.path).exists() and not Path(env_b.path).exists()


def test_one_key_builds_once_under_concurrency(tmp_path: Path) -> None:
    interp = detect()["python:3.11"]
    cache = EnvCache(tmp_path)
    builds: list[str] = []
    real_build = cache._build

    def counted_build(*args: object) -> None:
        builds.append("build")
        real_build(*args)  # type: ignore[arg-type]

    cache._build = counted_build  # type: ignore[method-assign]
    barrier = threading.Barrier(3)

    def use() -> None:
        barrier.wait()
        with cache.use(interp, "# same\n", lambda _line: None):
            pass

    threads = [threading.Thread(target=use) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert builds == ["build"]
    assert len([p for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith(".")]) == 1
