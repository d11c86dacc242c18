"""Object storage through the S3 API (MinIO in production, SeaweedFS here).

Clients and runners never hold storage credentials: they get presigned URLs.
The API may reach storage under a different host name than laptops or
workers do, so one SDK client talks to storage and another only signs
(presigning is offline) for the host name of the URL's audience.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Protocol

from minio import Minio
from minio.datatypes import Part
from minio.error import S3Error
from pydantic import SecretStr
from urllib3.exceptions import HTTPError

from rgrid_api.errors import StorageUnavailable
from rgrid_api.settings import Settings

log = logging.getLogger(__name__)

HASH_CHUNK = 1024 * 1024
# What S3 answers for its own passing faults (AWS's and SeaweedFS's names).
TRANSIENT_CODES = frozenset({"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout"})


@contextmanager
def _answering() -> Iterator[None]:
    """Storage that is down or restarting becomes StorageUnavailable (503:
    try again), not a server error: the SDK has already retried the
    connection, and the caller's own retry policy rides out the rest."""
    try:
        yield
    except S3Error as exc:
        if exc.code in TRANSIENT_CODES:
            raise StorageUnavailable(f"object storage is unavailable ({exc.code}); try again") from exc
        raise
    except HTTPError as exc:
        raise StorageUnavailable(
            f"object storage is unavailable ({exc.__class__.__name__}); try again"
        ) from exc


class ObjectStore(Protocol):
    """What the control plane's decisions need of storage: presigned URLs
    and what an object holds. `Storage` is S3; the fast tests give the same
    answers from memory."""

    def presign_put(self, key: str) -> str: ...
    def presign_get(self, key: str) -> str: ...
    def start_multipart(self, key: str) -> str: ...
    def presign_part(self, key: str, upload_id: str, number: int) -> str: ...
    def complete_multipart(self, key: str, upload_id: str, parts: list[tuple[int, str]]) -> None: ...
    def abort_multipart(self, key: str, upload_id: str) -> None: ...
    def size(self, key: str) -> int | None: ...
    def sizes(self, prefix: str) -> dict[str, int]: ...
    def sha256(self, key: str) -> str: ...
    def delete(self, key: str) -> None: ...


class Storage:
    def __init__(self, settings: Settings, presign_endpoint: str) -> None:
        self.bucket = settings.s3_bucket
        self.expiry = timedelta(seconds=settings.presign_expiry_s)

        def client(endpoint: str, access_key: str, secret: SecretStr) -> Minio:
            return Minio(
                endpoint,
                access_key=access_key,
                secret_key=secret.get_secret_value(),
                secure=settings.s3_secure,
                region=settings.s3_region,
            )

        self.client = client(settings.s3_endpoint, settings.s3_access_key, settings.s3_secret_key)
        signer, signer_secret = settings.s3_access_key, settings.s3_secret_key
        if settings.s3_presign_access_key and settings.s3_presign_secret_key:
            signer, signer_secret = settings.s3_presign_access_key, settings.s3_presign_secret_key
        self.signer = client(presign_endpoint, signer, signer_secret)

    def ensure_bucket(self) -> None:
        if not self.client.bucket_exists(self.bucket):
            self.client.make_bucket(self.bucket)

    def presign_put(self, key: str) -> str:
        return self.signer.presigned_put_object(self.bucket, key, expires=self.expiry)

    def presign_get(self, key: str) -> str:
        return self.signer.presigned_get_object(self.bucket, key, expires=self.expiry)

    def start_multipart(self, key: str) -> str:
        with _answering():
            return self.client._create_multipart_upload(self.bucket, key, {})

    def presign_part(self, key: str, upload_id: str, number: int) -> str:
        return self.signer.get_presigned_url(
            "PUT",
            self.bucket,
            key,
            expires=self.expiry,
            extra_query_params={"uploadId": upload_id, "partNumber": str(number)},
        )

    def complete_multipart(self, key: str, upload_id: str, parts: list[tuple[int, str]]) -> None:
        with _answering():
            self.client._complete_multipart_upload(
                self.bucket, key, upload_id, [Part(n, etag.strip('"')) for n, etag in parts]
            )

    def abort_multipart(self, key: str, upload_id: str) -> None:
        try:
            self.client._abort_multipart_upload(self.bucket, key, upload_id)
        except (S3Error, HTTPError) as exc:
            log.warning("abort of multipart upload %s failed: %s", upload_id, exc)

    def stale_multiparts(self, before: datetime) -> list[tuple[str, str]]:
        """(key, upload id) of multipart uploads started before `before` and
        never completed: one page (up to 1,000); a sweep that aborts them
        finds the rest on its next round."""
        with _answering():
            listed = self.client._list_multipart_uploads(self.bucket, max_uploads=1000)
        return [
            (u.object_name, str(u.upload_id))
            for u in listed.uploads
            if u.upload_id and u.initiated_time is not None and u.initiated_time < before
        ]

    def size(self, key: str) -> int | None:
        with _answering():
            try:
                return self.client.stat_object(self.bucket, key).size
            except S3Error as exc:
                if exc.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
                    return None
                raise

    def sizes(self, prefix: str) -> dict[str, int]:
        """Every object under `prefix` and its size: one listing call per
        1,000 objects, where asking each would be a call apiece."""
        with _answering():
            return {
                str(o.object_name): int(o.size or 0)
                for o in self.client.list_objects(self.bucket, prefix=prefix, recursive=True)
                if o.object_name is not None
            }

    def sha256(self, key: str) -> str:
        """Hash the stored bytes: what the client claims is never trusted."""
        digest = hashlib.sha256()
        with _answering():
            resp = self.client.get_object(self.bucket, key)
            try:
                for chunk in resp.stream(HASH_CHUNK):
                    digest.update(chunk)
            finally:
                resp.close()
                resp.release_conn()
        return digest.hexdigest()

    def delete(self, key: str) -> None:
        with _answering():
            self.client.remove_object(self.bucket, key)

    def ping(self) -> bool:
        try:
            self.client.bucket_exists(self.bucket)
            return True
        except Exception:  # noqa: BLE001 - health check reports any failure
            return False


def object_key(owner: str, sha256: str) -> str:
    return f"objects/{owner}/{sha256}"


def output_key(execution_id: str, attempt: int, path: str) -> str:
    return f"outputs/{execution_id}/{attempt}/{path}"
