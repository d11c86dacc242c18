"""sha256 of the files a run names, remembered across runs.

Uploads are content-addressed, so every run hashes every file it names; for
a large input that costs seconds each time (about 2 s per GiB here). A file
whose path, size, mtime, ctime and inode are unchanged since it was hashed
has the same content, so its digest is kept in RGRID_HOME/hashes.db (an
SQLite file only the user can read) and reused. ctime cannot be set by a
user, so even a rewrite that restores the mtime is caught.

Small files are hashed every time: that is cheaper than the lookup. The cache
is only an optimisation: if its file cannot be used, files are hashed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from rgrid.errors import UsageError

if TYPE_CHECKING:
    import sqlite3

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
CACHED_FROM_BYTES = 1024 * 1024
MAX_ENTRIES = 100_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS digests (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    device INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    used_at REAL NOT NULL
)
"""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _identity(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


class HashCache:
    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self._db: sqlite3.Connection | None = None
        self._failed = False

    def _open(self) -> sqlite3.Connection | None:
        import sqlite3  # only runs with a large file pay for the import

        if self._db is None and not self._failed:
            try:
                self.db_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                fd = os.open(self.db_path, os.O_RDWR | os.O_CREAT, 0o600)
                os.close(fd)
                self._db = sqlite3.connect(self.db_path, timeout=2.0)
                self._db.execute(SCHEMA)
            except (OSError, sqlite3.Error) as exc:
                log.debug("hash cache unavailable (%s); hashing every file", exc)
                self._failed = True
        return self._db

    def sha256(self, path: Path) -> str:
        """The file's sha256, from the cache when its identity is unchanged."""
        st = os.stat(path)
        if st.st_size < CACHED_FROM_BYTES:
            return sha256_file(path)
        import sqlite3

        key = str(path.resolve())
        db = self._open()
        if db is not None:
            try:
                row = db.execute(
                    "SELECT size, mtime_ns, ctime_ns, inode, device, sha256 FROM digests WHERE path = ?",
                    (key,),
                ).fetchone()
                if row is not None and tuple(row[:5]) == _identity(st):
                    db.execute("UPDATE digests SET used_at = ? WHERE path = ?", (time.time(), key))
                    return str(row[5])
            except sqlite3.Error as exc:
                log.debug("hash cache read failed: %s", exc)
        digest = sha256_file(path)
        after = os.stat(path)
        if db is not None and _identity(after) == _identity(st):  # unchanged while hashed
            try:
                db.execute(
                    "INSERT OR REPLACE INTO digests VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (key, *_identity(st), digest, time.time()),
                )
            except sqlite3.Error as exc:
                log.debug("hash cache write failed: %s", exc)
        return digest

    def close(self) -> None:
        if self._db is None:
            return
        import sqlite3

        try:
            self._db.execute(
                "DELETE FROM digests WHERE path IN "
                "(SELECT path FROM digests ORDER BY used_at DESC LIMIT -1 OFFSET ?)",
                (MAX_ENTRIES,),
            )
            self._db.commit()
        except sqlite3.Error as exc:
            log.debug("hash cache commit failed: %s", exc)
        finally:
            self._db.close()
            self._db = None


def sha256_files(paths: Iterable[Path], home: Path) -> dict[Path, str]:
    """sha256 of each file, reusing what RGRID_HOME/hashes.db knows."""
    cache = HashCache(home / "hashes.db")
    digests = {}
    try:
        for p in paths:
            try:
                digests[p] = cache.sha256(p)
            except OSError as exc:
                raise UsageError(f"cannot read {p}: {exc.strerror or exc.__class__.__name__}") from None
    finally:
        cache.close()
    return digests
