"""The worker's input cache against a real HTTP server on loopback: objects
fetched once, verified, read-only, shared by hard link, evicted least
recently used without pulling a file from under an attempt."""

from __future__ import annotations

import hashlib
import http.server
import os
import stat
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from rgrid.wire import RunnerFile
from rgrid_runner.inputcache import DigestMismatch, InputCache


class Objects:
    """Bytes served by path, and every GET counted."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.gets: list[str] = []
        self.url = ""

    def add(self, name: str, data: bytes) -> RunnerFile:
        self.blobs[name] = data
        return RunnerFile(path=name, url=f"{self.url}/{name}", sha256=hashlib.sha256(data).hexdigest())


@pytest.fixture
def objects() -> Iterator[Objects]:
    store = Objects()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            name = self.path.lstrip("/")
            store.gets.append(name)
            data = store.blobs.get(name)
            if data is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    store.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield store
    server.shutdown()
    server.server_close()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


def workdir(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.mkdir()
    return path


def test_an_object_is_fetched_once_then_linked_read_only(
    tmp_path: Path, objects: Objects, client: httpx.Client
) -> None:
    cache = InputCache(tmp_path / "cache", max_bytes=1 << 20)
    files = [objects.add("job.py", b"print(1)\n"), objects.add("data/a.csv", b"1,2\n")]
    first = cache.place(client, files, workdir(tmp_path, "w1"), share=True)
    second = cache.place(client, files, workdir(tmp_path, "w2"), share=True)
    assert (first.fetched, first.hits, second.fetched, second.hits) == (2, 0, 0, 2)
    assert sorted(objects.gets) == ["data/a.csv", "job.py"]
    placed = tmp_path / "w2" / "data" / "a.csv"
    assert placed.read_bytes() == b"1,2\n"
    assert stat.S_IMODE(placed.stat().st_mode) == 0o444
    assert placed.stat().st_ino == cache.path(files[1].sha256).stat().st_ino
    assert stat.S_IMODE((tmp_path / "cache").stat().st_mode) == 0o700


def test_without_an_isolating_sandbox_the_job_gets_a_copy(
    tmp_path: Path, objects: Objects, client: httpx.Client
) -> None:
    cache = InputCache(tmp_path / "cache", max_bytes=1 << 20)
    f = objects.add("a.csv", b"x")
    cache.place(client, [f], workdir(tmp_path, "w"), share=False)
    copy = tmp_path / "w" / "a.csv"
    assert copy.stat().st_ino != cache.path(f.sha256).stat().st_ino
    copy.write_bytes(b"changed")
    assert cache.path(f.sha256).read_bytes() == b"x"


def test_content_that_does_not_match_its_digest_is_never_cached(
    tmp_path: Path, objects: Objects, client: httpx.Client
) -> None:
    cache = InputCache(tmp_path / "cache", max_bytes=1 << 20)
    f = objects.add("a.csv", b"good")
    objects.blobs["a.csv"] = b"evil"
    with pytest.raises(DigestMismatch):
        cache.place(client, [f], workdir(tmp_path, "w"), share=True)
    assert not cache.path(f.sha256).exists()
    assert list((tmp_path / "cache" / "partial").iterdir()) == []


def test_least_recently_used_objects_go_and_linked_files_survive(
    tmp_path: Path, objects: Objects, client: httpx.Client
) -> None:
    cache = InputCache(tmp_path / "cache", max_bytes=250)
    a, b, c = (objects.add(n, n.encode() * 100) for n in ("a", "b", "c"))
    cache.place(client, [a], workdir(tmp_path, "wa"), share=True)
    cache.place(client, [b], workdir(tmp_path, "wb"), share=True)
    os.utime(cache.path(a.sha256), ns=(1, cache.path(a.sha256).stat().st_mtime_ns))  # a: used long ago
    cache.place(client, [c], workdir(tmp_path, "wc"), share=True)
    assert not cache.path(a.sha256).exists()
    assert cache.path(b.sha256).exists() and cache.path(c.sha256).exists()
    assert (tmp_path / "wa" / "a").read_bytes() == b"a" * 100  # the running attempt keeps its file


def test_a_hit_leaves_the_mtime_alone(tmp_path: Path, objects: Objects, client: httpx.Client) -> None:
    """Another attempt's output scan compares mtimes of the same inode."""
    cache = InputCache(tmp_path / "cache", max_bytes=1 << 20)
    f = objects.add("a.csv", b"x")
    cache.place(client, [f], workdir(tmp_path, "w1"), share=True)
    before = (tmp_path / "w1" / "a.csv").stat().st_mtime_ns
    cache.place(client, [f], workdir(tmp_path, "w2"), share=True)
    assert (tmp_path / "w1" / "a.csv").stat().st_mtime_ns == before


def test_concurrent_attempts_fill_the_same_object_safely(
    tmp_path: Path, objects: Objects, client: httpx.Client
) -> None:
    cache = InputCache(tmp_path / "cache", max_bytes=1 << 30)
    f = objects.add("big.bin", os.urandom(4 << 20))
    dirs = [workdir(tmp_path, f"w{i}") for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda d: cache.place(client, [f], d, share=True), dirs))
    for d in dirs:
        assert hashlib.sha256((d / "big.bin").read_bytes()).hexdigest() == f.sha256
    assert list((tmp_path / "cache" / "partial").iterdir()) == []
