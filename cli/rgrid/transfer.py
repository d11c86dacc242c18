"""Moving bytes: hashing, uploading through presigned URLs (multipart in
parallel for large files), and downloading outputs safely.

Downloads land in a temporary file beside the target and are renamed into
place only after their sha256 matched, so an interrupted download never
leaves a half-written output that looks complete.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

import httpx

from rgrid.client import Client
from rgrid.errors import RgridError, UsageError
from rgrid.wire import CompletedPart, ObjectSpec, OutputFile, UploadCompletion, UploadTicket

CHUNK = 1024 * 1024
PART_WORKERS = 4
# Backoff between tries of one PUT: storage restarting takes a few seconds.
PUT_BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)

Progress = Callable[[int], None]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _read_range(path: Path, offset: int, length: int, progress: Progress):  # type: ignore[no-untyped-def]
    with open(path, "rb") as fh:
        fh.seek(offset)
        left = length
        while left > 0:
            chunk = fh.read(min(CHUNK, left))
            if not chunk:
                raise RgridError(f"{path} changed while it was being uploaded")
            left -= len(chunk)
            progress(len(chunk))
            yield chunk


def _put(http: httpx.Client, url: str, path: Path, offset: int, length: int, progress: Progress) -> str:
    last: Exception | None = None
    for pause in (0.0, *PUT_BACKOFF_S):
        time.sleep(pause)
        sent = 0

        def counted(n: int) -> None:
            nonlocal sent
            sent += n
            progress(n)

        try:
            resp = http.put(
                url,
                content=_read_range(path, offset, length, counted),
                headers={"Content-Length": str(length)},
            )
            if resp.status_code < 300:
                return resp.headers.get("etag", "")
            last = RgridError(f"storage refused the upload of {path.name} (HTTP {resp.status_code})")
        except httpx.TransportError as exc:
            last = RgridError(f"upload of {path.name} failed: {exc.__class__.__name__}")
        progress(-sent)
    assert last is not None
    raise last


def upload_object(client: Client, ticket: UploadTicket, path: Path, progress: Progress) -> None:
    """Send one object as its ticket says, then ask the API to verify it."""
    if ticket.url is not None:
        _put(client.storage, ticket.url, path, 0, ticket.size, progress)
        client.complete_upload(UploadCompletion(sha256=ticket.sha256, size=ticket.size))
        return
    assert ticket.part_size is not None

    def send(part_no: int, url: str) -> CompletedPart:
        offset = (part_no - 1) * ticket.part_size
        length = min(ticket.part_size, ticket.size - offset)
        return CompletedPart(number=part_no, etag=_put(client.storage, url, path, offset, length, progress))

    with ThreadPoolExecutor(PART_WORKERS) as pool:
        parts = list(pool.map(lambda p: send(p.number, p.url), ticket.parts))
    client.complete_upload(
        UploadCompletion(sha256=ticket.sha256, size=ticket.size, upload_id=ticket.upload_id, parts=parts)
    )


def upload_missing(
    client: Client,
    by_sha: dict[str, Path],
    sizes: dict[str, int],
    progress_factory: Callable[[int], Progress],
) -> int:
    """Upload what the API does not have yet; returns the bytes sent."""
    plan = client.plan_uploads([ObjectSpec(sha256=s, size=sizes[s]) for s in by_sha])
    if not plan.missing:
        return 0
    total = sum(t.size for t in plan.missing)
    progress = progress_factory(total)
    for ticket in plan.missing:
        upload_object(client, ticket, by_sha[ticket.sha256], progress)
    return total


def output_target(dest: Path, rel: str) -> Path:
    """Where an output goes under dest; refuses anything that would escape it."""
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts or "\x00" in rel:
        raise UsageError(f"refusing output path {rel!r}: it would land outside {dest}")
    target = dest.joinpath(*pure.parts)
    root = dest.resolve()
    if not target.parent.resolve().is_relative_to(root):
        raise UsageError(f"refusing output path {rel!r}: it would land outside {dest}")
    return target


def download(http: httpx.Client, out: OutputFile, dest: Path) -> Path:
    target = output_target(dest, out.path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.parent.resolve().is_relative_to(dest.resolve()):
        raise UsageError(f"refusing output path {out.path!r}: it would land outside {dest}")
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(prefix=".rgrid-", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh, http.stream("GET", out.url) as resp:
            if resp.status_code >= 300:
                raise RgridError(f"could not download {out.path} (HTTP {resp.status_code})")
            for chunk in resp.iter_bytes(CHUNK):
                digest.update(chunk)
                fh.write(chunk)
        if digest.hexdigest() != out.sha256:
            raise RgridError(f"download of {out.path} was corrupted (sha256 mismatch)")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
