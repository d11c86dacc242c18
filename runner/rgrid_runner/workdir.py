"""The per-attempt work dir, where inputs are laid out as the client asked
(by `inputcache`), and the files the script created or changed collected
afterwards.

Symlinks are never followed when collecting, so a script cannot publish a
host file by linking to it; count and total size are capped.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from rgrid.retry import TRANSFERS, call_with_retry
from rgrid.wire import OutputFile, relative_path

COPY_CHUNK = 1024 * 1024


class OutputLimitExceeded(Exception):
    pass


@dataclass(frozen=True)
class OutputLimits:
    max_files: int = 10_000
    max_total_bytes: int = 10 * 1024**3


Snapshot = dict[str, tuple[int, int]]


def safe_join(root: Path, rel: str) -> Path:
    """rel under root, by the one relative-path rule (ValueError otherwise)."""
    return root.joinpath(*relative_path(rel).parts)


def make_workdir(base: Path | None, execution_id: str, attempt: int) -> Path:
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{execution_id}-{attempt}-", dir=base))


def remove_workdir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _walk(root: Path) -> Iterator[os.DirEntry[str]]:
    """Regular files under root, without following any symlink."""
    stack = [root]
    while stack:
        current = stack.pop()
        with os.scandir(current) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    yield entry


def snapshot(root: Path) -> Snapshot:
    return {
        os.path.relpath(e.path, root): (
            e.stat(follow_symlinks=False).st_size,
            e.stat(follow_symlinks=False).st_mtime_ns,
        )
        for e in _walk(root)
    }


def changed_files(root: Path, before: Snapshot, limits: OutputLimits) -> list[str]:
    """Relative paths of files created or modified since `before`."""
    changed = []
    total = 0
    for entry in _walk(root):
        st = entry.stat(follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode):
            continue
        rel = os.path.relpath(entry.path, root)
        if before.get(rel) == (st.st_size, st.st_mtime_ns):
            continue
        changed.append(rel)
        total += st.st_size
        if len(changed) > limits.max_files:
            raise OutputLimitExceeded(f"more than {limits.max_files} output files")
        if total > limits.max_total_bytes:
            raise OutputLimitExceeded(f"outputs exceed {limits.max_total_bytes} bytes")
    return sorted(changed)


def upload(http: httpx.Client, root: Path, rel: str, url: str) -> OutputFile:
    """PUT one output (retried while storage errs)."""
    return call_with_retry(lambda: _upload_once(http, root, rel, url), TRANSFERS, f"upload of {rel}")


def _upload_once(http: httpx.Client, root: Path, rel: str, url: str) -> OutputFile:
    """PUT one output, streaming, hashing the bytes as they are sent."""
    path = safe_join(root, rel)
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    digest = hashlib.sha256()
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        size = st.st_size

        def chunks() -> Iterator[bytes]:
            sent = 0
            while sent < size:
                chunk = fh.read(min(COPY_CHUNK, size - sent))
                if not chunk:
                    break
                digest.update(chunk)
                sent += len(chunk)
                yield chunk

        resp = http.put(url, content=chunks(), headers={"Content-Length": str(size)})
    resp.raise_for_status()
    return OutputFile(path=rel, size=size, sha256=digest.hexdigest(), mode=st.st_mode & 0o777)
