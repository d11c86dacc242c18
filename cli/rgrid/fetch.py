"""Fetching one object from a presigned URL into a file, and its sha256.

One HTTP stream is bound by what one connection carries, which on a long
link (a laptop far from the grid's storage, a worker in another region) is
far below the link itself; uploads already send parts in parallel. So a
download asks for its first part by range: an object that fits comes whole
in that one request, as it did before; a larger one reveals its size in
the answer, and the rest comes in parts, several at a time, each written at
its offset. The first part is hashed as it arrives, the rest from the file
afterwards (from the page cache), in order.
"""

from __future__ import annotations

import hashlib
import os
import re
from concurrent.futures import ThreadPoolExecutor

import httpx

CHUNK = 1024 * 1024
PART_BYTES = 16 * 1024 * 1024
# Parts in flight at once for one object, both ways (uploads use it too).
PART_STREAMS = 4

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


class FetchError(Exception):
    """The storage answered, but not with the object's bytes."""


def fetch_into(http: httpx.Client, url: str, fd: int) -> str:
    """Write the object at `url` into the empty, open file `fd`; returns the
    sha256 (hex) of what was written. The caller compares it and retries."""
    digest = hashlib.sha256()
    with http.stream("GET", url, headers={"Range": f"bytes=0-{PART_BYTES - 1}"}) as resp:
        if resp.status_code == 416:  # an empty object has no byte 0
            with http.stream("GET", url) as whole:
                _stream_to(whole, fd, digest)
            return digest.hexdigest()
        total = _total_size(resp)
        received = _stream_to(resp, fd, digest)
    if total is None:
        return digest.hexdigest()
    if received != min(total, PART_BYTES):
        raise FetchError(f"storage sent {received} bytes of the first part of an object of {total}")
    if total <= PART_BYTES:
        return digest.hexdigest()
    os.ftruncate(fd, total)
    offsets = range(PART_BYTES, total, PART_BYTES)
    with ThreadPoolExecutor(PART_STREAMS) as pool:
        list(
            pool.map(
                lambda offset: _fetch_part(http, url, fd, offset, min(PART_BYTES, total - offset)), offsets
            )
        )
    for offset in range(PART_BYTES, total, CHUNK):
        digest.update(os.pread(fd, min(CHUNK, total - offset), offset))
    return digest.hexdigest()


def _total_size(resp: httpx.Response) -> int | None:
    """The object's size from a ranged answer; None when the server sent the
    whole object (200) instead."""
    resp.raise_for_status()
    if resp.status_code != 206:
        return None
    match = _CONTENT_RANGE.fullmatch(resp.headers.get("content-range", ""))
    if match is None or int(match[1]) != 0:
        raise FetchError(
            f"storage answered a ranged GET with Content-Range {resp.headers.get('content-range')!r}"
        )
    return int(match[3])


def _stream_to(resp: httpx.Response, fd: int, digest: hashlib._Hash) -> int:
    """The whole body, from offset 0, hashed as it arrives; its length."""
    resp.raise_for_status()
    return _write_at(resp, fd, 0, digest=digest)


def _fetch_part(http: httpx.Client, url: str, fd: int, offset: int, length: int) -> None:
    end = offset + length - 1
    with http.stream("GET", url, headers={"Range": f"bytes={offset}-{end}"}) as resp:
        resp.raise_for_status()
        if resp.status_code != 206 or not resp.headers.get("content-range", "").startswith(
            f"bytes {offset}-{end}/"
        ):
            raise FetchError(f"storage did not send bytes {offset}-{end} as asked (HTTP {resp.status_code})")
        received = _write_at(resp, fd, offset, limit=length)
    if received != length:
        raise FetchError(f"storage sent {received} of bytes {offset}-{end}")


def _write_at(
    resp: httpx.Response, fd: int, offset: int, limit: int | None = None, digest: hashlib._Hash | None = None
) -> int:
    """Write the body at `offset` on, hashing it too when given a digest;
    returns its length. More than `limit` bytes is refused."""
    position = offset
    for chunk in resp.iter_bytes(CHUNK):
        if limit is not None and position + len(chunk) > offset + limit:
            raise FetchError(f"storage sent more than the {limit} bytes asked for at {offset}")
        if digest is not None:
            digest.update(chunk)
        view = memoryview(chunk)
        while view:
            written = os.pwrite(fd, view, position)
            view, position = view[written:], position + written
    return position - offset
