"""The client's digest cache: a large file is hashed once while it stays the
same file, and again as soon as anything about it changed."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from rgrid.errors import UsageError
from rgrid.hashcache import CACHED_FROM_BYTES, HashCache, sha256_files


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def big(tmp_path: Path) -> Path:
    path = tmp_path / "big.bin"
    path.write_bytes(b"a" * CACHED_FROM_BYTES)
    return path


def counting(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Record every file actually read for hashing."""
    import rgrid.hashcache as hc

    hashed: list[Path] = []
    real = hc.sha256_file

    def spy(path: Path) -> str:
        hashed.append(path)
        return real(path)

    monkeypatch.setattr(hc, "sha256_file", spy)
    return hashed


def test_an_unchanged_large_file_is_hashed_once(
    tmp_path: Path, big: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hashed = counting(monkeypatch)
    home = tmp_path / "home"
    first = sha256_files([big], home)
    second = sha256_files([big], home)
    assert first == second == {big: digest(big.read_bytes())}
    assert hashed == [big]
    assert stat.S_IMODE((home / "hashes.db").stat().st_mode) == 0o600


def test_a_rewrite_with_the_same_size_and_mtime_is_hashed_again(
    tmp_path: Path, big: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    sha256_files([big], home)
    before = big.stat()
    with open(big, "r+b") as fh:  # same inode, same size
        fh.write(b"b")
    os.utime(big, ns=(before.st_atime_ns, before.st_mtime_ns))  # mtime put back
    hashed = counting(monkeypatch)
    assert sha256_files([big], home)[big] == digest(b"b" + b"a" * (CACHED_FROM_BYTES - 1))
    assert hashed == [big]


def test_a_replaced_file_is_hashed_again(tmp_path: Path, big: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    sha256_files([big], home)
    other = tmp_path / "other.bin"
    other.write_bytes(b"c" * CACHED_FROM_BYTES)
    os.replace(other, big)  # a new inode at the same path
    hashed = counting(monkeypatch)
    assert sha256_files([big], home)[big] == digest(b"c" * CACHED_FROM_BYTES)
    assert hashed == [big]


def test_small_files_are_always_hashed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small = tmp_path / "s.py"
    small.write_text("print(1)\n")
    hashed = counting(monkeypatch)
    home = tmp_path / "home"
    sha256_files([small], home)
    sha256_files([small], home)
    assert hashed == [small, small]
    assert not (home / "hashes.db").exists()


def test_an_unusable_cache_only_costs_the_hashing(tmp_path: Path, big: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "hashes.db").write_bytes(b"not a database" * 100)
    assert sha256_files([big], home) == {big: digest(big.read_bytes())}
    cache = HashCache(home / "hashes.db")
    assert cache.sha256(big) == digest(big.read_bytes())
    cache.close()


def test_a_vanished_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read"):
        sha256_files([tmp_path / "gone.csv"], tmp_path / "home")
