"""Moving bytes: hashing, uploading through presigned URLs (multipart in
parallel for large files), and downloading outputs safely.

Downloads land in a temporary file beside the target and are renamed into
place only after their sha256 matched, so an interrupted download never
leaves a half-written output that looks complete.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from rgrid.client import Client
from rgrid.errors import RgridError, UsageError
from rgrid.fetch import CHUNK, PART_STREAMS, FetchError, fetch_into
from rgrid.retry import TRANSFERS, call_with_retry
from rgrid.wire import (
    CompletedPart,
    ObjectSpec,
    OutputFile,
    UploadCompletion,
    UploadTicket,
    relative_path,
)

OBJECT_WORKERS = 8

Progress = Callable[[int], None]


def _read_range(path: Path, offset: int, length: int, progress: Progress) -> Iterator[bytes]:
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
    """PUT one byte range to a presigned URL; what a failed try had counted
    as progress is taken back before the next."""

    def once() -> str:
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
            resp.raise_for_status()
        except BaseException:
            progress(-sent)
            raise
        return resp.headers.get("etag", "")

    try:
        return call_with_retry(once, TRANSFERS, f"upload of {path.name}")
    except httpx.HTTPStatusError as exc:
        raise RgridError(
            f"storage refused the upload of {path.name} (HTTP {exc.response.status_code})"
        ) from None
    except httpx.TransportError as exc:
        raise RgridError(f"upload of {path.name} failed: {exc.__class__.__name__}") from None


def upload_object(client: Client, ticket: UploadTicket, path: Path, progress: Progress) -> None:
    """Send one object as its ticket says, then ask the API to verify it."""
    if ticket.url is not None:
        _put(client.storage, ticket.url, path, 0, ticket.size, progress)
        client.complete_upload(UploadCompletion(sha256=ticket.sha256, size=ticket.size))
        return
    part_size = ticket.part_size
    if part_size is None:
        raise RgridError(f"the API sent an upload ticket for {path.name} with neither URL nor parts")

    def send(part_no: int, url: str) -> CompletedPart:
        offset = (part_no - 1) * part_size
        length = min(part_size, ticket.size - offset)
        return CompletedPart(number=part_no, etag=_put(client.storage, url, path, offset, length, progress))

    with ThreadPoolExecutor(PART_STREAMS) as pool:
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
    if len(plan.missing) == 1:
        upload_object(client, plan.missing[0], by_sha[plan.missing[0].sha256], progress)
        return total
    # Many files (a batch's inputs): several at a time, as a large file's parts go.
    with ThreadPoolExecutor(OBJECT_WORKERS) as pool:
        list(pool.map(lambda t: upload_object(client, t, by_sha[t.sha256], progress), plan.missing))
    return total


def output_target(dest: Path, rel: str) -> Path:
    """Where an output goes under dest; refuses anything that would escape it."""
    try:
        pure = relative_path(rel)
    except ValueError:
        raise UsageError(f"refusing output path {rel!r}: it would land outside {dest}") from None
    target = dest.joinpath(*pure.parts)
    root = dest.resolve()
    if not target.parent.resolve().is_relative_to(root):
        raise UsageError(f"refusing output path {rel!r}: it would land outside {dest}")
    return target


def _read_umask() -> int:
    """This process's umask, read by setting it: done once, at import, in
    the main thread (never while download threads run)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


UMASK = _read_umask()


def download(http: httpx.Client, out: OutputFile, dest: Path) -> Path:
    if out.url is None:
        raise RgridError(f"the API sent no download URL for {out.path}")
    target = output_target(dest, out.path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.parent.resolve().is_relative_to(dest.resolve()):
        raise UsageError(f"refusing output path {out.path!r}: it would land outside {dest}")
    fd, tmp = tempfile.mkstemp(prefix=".rgrid-", dir=target.parent)
    try:
        try:
            digest = fetch_into(http, out.url, fd)
        except httpx.HTTPStatusError as exc:
            raise RgridError(f"could not download {out.path} (HTTP {exc.response.status_code})") from None
        except FetchError as exc:
            raise RgridError(f"could not download {out.path}: {exc}") from None
        finally:
            os.close(fd)
        if digest != out.sha256:
            raise RgridError(f"download of {out.path} was corrupted (sha256 mismatch)")
        # The job's permission bits under the user's umask, as a local
        # program's file would get them (mkstemp made it 0600).
        os.chmod(tmp, (0o666 if out.mode is None else out.mode) & ~UMASK & 0o777)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
