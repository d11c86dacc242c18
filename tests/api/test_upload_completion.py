"""Completing an upload against the real S3 server: a completion asked again
after storage already assembled the parts, and storage that does not answer."""

from __future__ import annotations

import hashlib
import io
import os
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from minio import Minio
from minio.error import S3Error
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from rgrid.local.procs import free_port
from rgrid.wire import CompletedPart, ObjectSpec, UploadCompletion
from rgrid_api.db.models import StoredObject
from rgrid_api.errors import Invalid, StorageUnavailable, TooLarge
from rgrid_api.settings import Settings
from rgrid_api.storage import Storage, object_key
from rgrid_api.uploads import complete_upload, plan_uploads
from rgrid_api.uploadsweep import sweep_abandoned
from tests.support.services import S3Server

PART = 5 * 1024 * 1024
STORAGE_TIMEOUT_S = 120.0


def settings_for(s3: S3Server, endpoint: str | None = None) -> Settings:
    return Settings(
        s3_endpoint=endpoint or s3.endpoint,
        s3_access_key=s3.access_key,
        s3_secret_key=SecretStr(s3.secret_key),
        multipart_threshold=PART + 1,
        multipart_part_size=PART,
    )


def send_parts(session: Session, storage: Storage, settings: Settings, data: bytes) -> UploadCompletion:
    """Plan a multipart upload and PUT its parts, as the CLI does."""
    sha = hashlib.sha256(data).hexdigest()
    (ticket,) = plan_uploads(
        session, storage, settings, "alice", [ObjectSpec(sha256=sha, size=len(data))]
    ).missing
    session.commit()
    assert ticket.part_size == PART and len(ticket.parts) == 3
    parts = []
    for part in ticket.parts:
        chunk = data[(part.number - 1) * PART : part.number * PART]
        # A fresh SeaweedFS grows its first volume on the first write: seconds
        # on a loaded machine, past httpx's default 5 s.
        resp = httpx.put(part.url, content=chunk, timeout=STORAGE_TIMEOUT_S)
        resp.raise_for_status()
        parts.append(CompletedPart(number=part.number, etag=resp.headers["etag"]))
    return UploadCompletion(sha256=sha, size=len(data), upload_id=ticket.upload_id, parts=parts)


def test_a_completion_asked_again_after_storage_assembled_the_parts(
    session: Session, sessions: sessionmaker[Session], s3: S3Server
) -> None:
    """The first completion assembled the parts, then its answer was lost
    (storage restarting under the size check). Asked again, AWS and MinIO
    no longer know the upload id (NoSuchUpload; SeaweedFS still does, so
    the row is pointed at an id it never knew): the API finds the object
    there and verifies it, instead of failing the upload."""
    settings = settings_for(s3)
    storage = Storage(settings, settings.s3_endpoint)
    storage.ensure_bucket()
    data = os.urandom(2 * PART + 1000)
    done = send_parts(session, storage, settings, data)
    assert done.upload_id is not None
    key = object_key("alice", done.sha256)
    storage.complete_multipart(key, done.upload_id, [(p.number, p.etag) for p in done.parts])
    row = session.scalar(select(StoredObject).where(StoredObject.sha256 == done.sha256))
    assert row is not None
    row.upload_id = "an-upload-storage-forgot"
    session.commit()

    complete_upload(sessions, storage, "alice", done.model_copy(update={"upload_id": row.upload_id}))

    session.refresh(row)
    assert row.complete and row.upload_id is None
    assert storage.sha256(key) == done.sha256


def test_parts_storage_refuses_are_the_clients_error(
    session: Session, sessions: sessionmaker[Session], s3: S3Server
) -> None:
    settings = settings_for(s3)
    storage = Storage(settings, settings.s3_endpoint)
    storage.ensure_bucket()
    done = send_parts(session, storage, settings, os.urandom(2 * PART + 10))
    wrong = [CompletedPart(number=p.number, etag='"' + "0" * 32 + '"') for p in done.parts]
    with pytest.raises(Invalid, match="storage refused the parts") as refused:
        complete_upload(sessions, storage, "alice", done.model_copy(update={"parts": wrong}))
    assert refused.value.status_code == 422


def test_storage_that_does_not_answer_is_unavailable_not_a_server_error(s3: S3Server) -> None:
    """Nothing listens at the endpoint: each call that reaches storage says
    so in one line, as a 503 the clients retry."""
    settings = settings_for(s3, endpoint=f"127.0.0.1:{free_port()}")
    storage = Storage(settings, settings.s3_endpoint)
    started = time.monotonic()
    with pytest.raises(StorageUnavailable, match="object storage is unavailable") as down:
        storage.size("objects/alice/x")
    assert down.value.status_code == 503
    print(f"\nunanswered storage reported after {time.monotonic() - started:.1f} s")


def test_a_file_past_the_size_limit_is_refused_before_any_byte_moves(session: Session, s3: S3Server) -> None:
    settings = settings_for(s3).model_copy(update={"max_input_bytes": 1000})
    storage = Storage(settings, settings.s3_endpoint)
    small, big = ObjectSpec(sha256="a" * 64, size=1000), ObjectSpec(sha256="b" * 64, size=1001)
    with pytest.raises(TooLarge, match=r"1,001 bytes is larger than this grid accepts \(1,000 bytes"):
        plan_uploads(session, storage, settings, "alice", [small, big])
    assert session.scalar(select(StoredObject)) is None  # no ticket, no row
    assert len(plan_uploads(session, storage, settings, "alice", [small]).missing) == 1
    session.commit()


def test_abandoned_uploads_are_gone_after_the_grace_period(
    session: Session, sessions: sessionmaker[Session], s3: S3Server
) -> None:
    """A client plans a multipart upload, sends one part and vanishes; another
    PUTs bytes it never completes. After the grace period the sweep aborts the
    multipart upload in storage, removes the stray bytes and the rows; a
    completed object and a fresh upload stay."""
    settings = settings_for(s3)
    storage = Storage(settings, settings.s3_endpoint)
    storage.ensure_bucket()
    big = os.urandom(2 * PART + 10)
    big_sha = hashlib.sha256(big).hexdigest()
    (ticket,) = plan_uploads(
        session, storage, settings, "alice", [ObjectSpec(sha256=big_sha, size=len(big))]
    ).missing
    session.commit()
    httpx.put(ticket.parts[0].url, content=big[:PART], timeout=STORAGE_TIMEOUT_S).raise_for_status()
    stray = b"never completed\n"
    stray_sha = hashlib.sha256(stray).hexdigest()
    (put,) = plan_uploads(
        session, storage, settings, "alice", [ObjectSpec(sha256=stray_sha, size=len(stray))]
    ).missing
    session.commit()
    httpx.put(str(put.url), content=stray, timeout=STORAGE_TIMEOUT_S).raise_for_status()
    kept = b"kept\n"
    kept_sha = hashlib.sha256(kept).hexdigest()
    (done,) = plan_uploads(
        session, storage, settings, "alice", [ObjectSpec(sha256=kept_sha, size=len(kept))]
    ).missing
    session.commit()
    httpx.put(str(done.url), content=kept, timeout=STORAGE_TIMEOUT_S).raise_for_status()
    complete_upload(sessions, storage, "alice", UploadCompletion(sha256=kept_sha, size=len(kept)))
    listed = {
        upload_id for _key, upload_id in storage.stale_multiparts(datetime.now(UTC) + timedelta(hours=1))
    }
    assert ticket.upload_id in listed

    assert sweep_abandoned(sessions, storage, grace_s=3600) == 0  # within the grace period: nothing goes
    assert storage.size(object_key("alice", stray_sha)) == len(stray)

    for row in session.scalars(select(StoredObject)):
        row.created_at = datetime.now(UTC) - timedelta(hours=2)  # as if planned two hours ago
    session.commit()
    assert sweep_abandoned(sessions, storage, grace_s=3600) >= 2
    assert {r.sha256 for r in session.scalars(select(StoredObject))} == {kept_sha}
    assert storage.size(object_key("alice", stray_sha)) is None
    assert storage.size(object_key("alice", kept_sha)) == len(kept)
    remaining = {u for _key, u in storage.stale_multiparts(datetime.now(UTC) + timedelta(hours=1))}
    assert ticket.upload_id not in remaining


def test_urls_are_signed_by_an_identity_limited_to_the_bucket(s3: S3Server) -> None:
    """What a presigned URL carries is the limited identity's key, and that
    identity reaches rgrid's bucket and nothing else of the storage."""
    settings = settings_for(s3).model_copy(
        update={
            "s3_presign_access_key": s3.presign_access_key,
            "s3_presign_secret_key": SecretStr(s3.presign_secret_key),
        }
    )
    storage = Storage(settings, settings.s3_endpoint)
    storage.ensure_bucket()
    url = storage.presign_put(object_key("alice", "c" * 64))
    assert f"X-Amz-Credential={s3.presign_access_key}%2F" in url and s3.access_key not in url
    httpx.put(url, content=b"signed by the limited identity", timeout=STORAGE_TIMEOUT_S).raise_for_status()
    assert storage.size(object_key("alice", "c" * 64)) == len(b"signed by the limited identity")

    root = Minio(s3.endpoint, s3.access_key, s3.secret_key, secure=False)
    other = "not-rgrids-" + os.urandom(4).hex()
    root.make_bucket(other)
    root.put_object(other, "secret.txt", io.BytesIO(b"another bucket"), 14)
    limited = Minio(s3.endpoint, s3.presign_access_key, s3.presign_secret_key, secure=False)
    with pytest.raises(S3Error, match="AccessDenied"):
        limited.get_object(other, "secret.txt")
    with pytest.raises(S3Error, match="AccessDenied"):
        limited.put_object(other, "planted.txt", io.BytesIO(b"x"), 1)
    with pytest.raises(S3Error, match="AccessDenied"):
        limited.make_bucket("made-by-a-url-" + os.urandom(4).hex())
