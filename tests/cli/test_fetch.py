"""Downloads from presigned URLs of the real S3 server: an object that fits
one part comes in one request, a larger one in ranged parts in parallel,
and every size comes back byte for byte with the right sha256."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import tempfile
import threading
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from minio import Minio

from rgrid import fetch
from rgrid.fetch import FetchError, fetch_into
from tests.support.services import S3Server

PART = 64 * 1024
BUCKET = "fetch-test"


@pytest.fixture(scope="module")
def minio(s3: S3Server) -> Minio:
    client = Minio(s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key, secure=False)
    if not client.bucket_exists(BUCKET):
        client.make_bucket(BUCKET)
    return client


def fetched(http: httpx.Client, url: str) -> tuple[bytes, str]:
    fd, path = tempfile.mkstemp()
    try:
        digest = fetch_into(http, url, fd)
        os.lseek(fd, 0, os.SEEK_SET)
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read(), digest
    finally:
        os.close(fd)
        os.unlink(path)


@pytest.mark.parametrize(
    ("size", "requests"),
    [(0, 2), (1, 1), (PART - 1, 1), (PART, 1), (PART + 1, 2), (5 * PART + 3, 6)],
)
def test_every_size_comes_back_whole_in_as_few_requests_as_it_needs(
    minio: Minio, monkeypatch: pytest.MonkeyPatch, size: int, requests: int
) -> None:
    monkeypatch.setattr(fetch, "PART_BYTES", PART)
    data = os.urandom(size)
    name = f"object-{size}"
    minio.put_object(BUCKET, name, io.BytesIO(data), size)
    url = minio.presigned_get_object(BUCKET, name, expires=timedelta(minutes=5))
    ranges: list[str | None] = []
    with httpx.Client(event_hooks={"request": [lambda r: ranges.append(r.headers.get("range"))]}) as http:
        body, digest = fetched(http, url)
    assert body == data
    assert digest == hashlib.sha256(data).hexdigest()
    # An empty object has no byte 0: its ranged GET is refused, then it is fetched whole.
    assert len(ranges) == requests, ranges
    assert ranges[0] == f"bytes=0-{PART - 1}"
    assert sorted(r for r in ranges[1:] if r) == sorted(
        f"bytes={o}-{min(o + PART, size) - 1}" for o in range(PART, size, PART)
    )


@pytest.fixture
def lying_server() -> Iterator[str]:
    """Answers every ranged GET with the first bytes, whatever was asked."""
    data = b"x" * (3 * PART)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(206)
            self.send_header("Content-Range", f"bytes 0-{PART - 1}/{len(data)}")
            self.send_header("Content-Length", str(PART))
            self.end_headers()
            self.wfile.write(data[:PART])

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/object"
    server.shutdown()


def test_a_part_other_than_the_one_asked_for_is_refused(
    lying_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fetch, "PART_BYTES", PART)
    with httpx.Client() as http, pytest.raises(FetchError, match="did not send bytes"):
        fetched(http, lying_server)
