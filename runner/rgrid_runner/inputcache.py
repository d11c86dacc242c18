"""The worker's content-addressed cache of scripts and inputs.

Every run of a script over the same big input used to download it again.
Files are kept by sha256 under `objects/`, shared by every worker process
of the node, bounded in bytes and evicted least recently used. A file's
access time is its last use: never its mtime, which a running attempt's
output scan compares, and which a hard link shares.

- **Verified on fill.** A download is hashed as it is written to a private
  temporary file, and only a file whose digest matches is linked into
  `objects/`. Two attempts filling the same object at once both download;
  the first link wins, and the content is the same.
- **Read-only to jobs.** Objects belong to the runner's user with mode 0444
  and their directory is not the job's: a job can read an input, never
  change the cached copy (the sandbox leaves read-only files alone when it
  hands the work dir to the job's user). Without an isolating sandbox the
  job runs as the runner's own user, so it gets a copy instead.
- **Safe under concurrent attempts.** An attempt hard-links the object
  into its work dir. Evicting an object only removes the cache's name for
  it: an attempt that holds a link keeps its file until it ends.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from rgrid.fetch import fetch_into
from rgrid.retry import TRANSFERS, call_with_retry
from rgrid.wire import RunnerFile
from rgrid_runner.workdir import safe_join

log = logging.getLogger(__name__)


_DIGEST = re.compile(r"[0-9a-f]{64}")


class DigestMismatch(Exception):
    """What was downloaded is not the object that was asked for."""


@dataclass(frozen=True)
class Placed:
    """How many files an attempt found in the cache, and how many it fetched."""

    hits: int
    fetched: int


class InputCache:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.objects = root / "objects"
        self.partial = root / "partial"
        for d in (root, self.objects, self.partial):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o700)

    def path(self, sha256: str) -> Path:
        if not _DIGEST.fullmatch(sha256):
            raise ValueError(f"not a sha256 digest: {sha256[:80]!r}")
        return self.objects / sha256

    def place(self, http: httpx.Client, files: list[RunnerFile], workdir: Path, share: bool) -> Placed:
        """Put every file at its path under `workdir`, from the cache when it
        holds the object, else downloaded (and cached) first. `share` links
        the cached object itself (read-only); otherwise the job gets a copy."""
        hits = fetched = 0
        for f in files:
            target = safe_join(workdir, f.path)
            target.parent.mkdir(parents=True, exist_ok=True)
            if self._link_cached(f.sha256, target, share):
                hits += 1
                continue
            self._fill(http, f)
            fetched += 1
            if not self._link_cached(f.sha256, target, share):
                raise FileNotFoundError(f"cached object for {f.path} vanished as it was filled")
        if fetched:
            self.evict()
        return Placed(hits, fetched)

    def _link_cached(self, sha256: str, target: Path, share: bool) -> bool:
        source = self.path(sha256)
        try:
            st = os.stat(source)
            os.utime(source, ns=(time.time_ns(), st.st_mtime_ns))  # last use, for eviction
            if share:
                try:
                    os.link(source, target)
                    return True
                except OSError as exc:
                    if exc.errno != errno.EXDEV:  # the work dir is on another file system
                        raise
            shutil.copyfile(source, target)
            return True
        except FileNotFoundError:
            return False

    def _fill(self, http: httpx.Client, f: RunnerFile) -> None:
        call_with_retry(lambda: self._download(http, f), TRANSFERS, f"download of {f.path}")

    def _download(self, http: httpx.Client, f: RunnerFile) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.partial)
        try:
            try:
                digest = fetch_into(http, f.url, fd)
            finally:
                os.close(fd)
            if digest != f.sha256:
                raise DigestMismatch(f"{f.path}: storage returned content with another sha256")
            os.chmod(tmp, 0o444)
            with contextlib.suppress(FileExistsError):  # another attempt filled it first
                os.link(tmp, self.path(f.sha256))
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def evict(self) -> None:
        """Remove least recently used objects until the cache fits."""
        entries = []
        total = 0
        with os.scandir(self.objects) as it:
            for entry in it:
                with contextlib.suppress(FileNotFoundError):
                    st = entry.stat(follow_symlinks=False)
                    entries.append((st.st_atime_ns, st.st_size, entry.path))
                    total += st.st_size
        entries.sort()
        for _used, size, path in entries:
            if total <= self.max_bytes:
                break
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
                total -= size
        self._sweep_partial()

    def _sweep_partial(self, older_than_s: float = 3600.0) -> None:
        """Temporary files a killed worker process left behind."""
        cutoff = time.time() - older_than_s
        with os.scandir(self.partial) as it:
            for entry in it:
                with contextlib.suppress(FileNotFoundError):
                    if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                        os.unlink(entry.path)
