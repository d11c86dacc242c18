"""Which objects a client still has to upload, and accepting them once verified.

An object row exists from the moment a ticket is handed out, but only
`complete` rows can be used by an execution, and a row becomes complete only
after the stored bytes were measured and hashed. A failed or abandoned upload
therefore never counts as uploaded.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from typing import Any, cast

from minio.error import S3Error
from sqlalchemy import CursorResult, and_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from rgrid.wire import ObjectSpec, UploadCompletion, UploadPart, UploadPlan, UploadTicket
from rgrid_api.db.models import StoredObject
from rgrid_api.errors import Conflict, Invalid, NotFound, StorageUnavailable, TooLarge
from rgrid_api.settings import Settings
from rgrid_api.storage import ObjectStore, object_key

log = logging.getLogger(__name__)

MAX_PARTS = 10_000


def plan_uploads(
    session: Session, storage: ObjectStore, settings: Settings, owner: str, objects: list[ObjectSpec]
) -> UploadPlan:
    """Tickets for the objects the owner does not have yet. Two clients may
    announce the same new object at once; the loser of that insert race
    (inside a savepoint, so the caller's transaction goes on) simply plans
    again and finds the winner's row."""
    try:
        with session.begin_nested():
            return _plan(session, storage, settings, owner, objects)
    except IntegrityError:
        return _plan(session, storage, settings, owner, objects)


def _plan(
    session: Session, storage: ObjectStore, settings: Settings, owner: str, objects: list[ObjectSpec]
) -> UploadPlan:
    wanted = {o.sha256: o for o in objects}
    too_big = [o for o in objects if o.size > settings.max_input_bytes]
    if too_big:
        raise TooLarge(
            f"a file of {too_big[0].size:,} bytes is larger than this grid accepts "
            f"({settings.max_input_bytes:,} bytes, RGRID_MAX_INPUT_BYTES)"
        )
    rows = {
        r.sha256: r
        for r in session.scalars(
            select(StoredObject).where(StoredObject.owner == owner, StoredObject.sha256.in_(list(wanted)))
        )
    }
    missing = []
    for sha, spec in wanted.items():
        row = rows.get(sha)
        if row is not None and row.complete:
            continue
        if row is None:
            row = StoredObject(
                owner=owner, sha256=sha, size=spec.size, complete=False, created_at=datetime.now(UTC)
            )
            session.add(row)
        row.size = spec.size
        row.created_at = datetime.now(UTC)  # a new ticket: the cleanup's grace starts again
        missing.append(_ticket(storage, settings, owner, row))
    return UploadPlan(missing=missing)


def _ticket(storage: ObjectStore, settings: Settings, owner: str, row: StoredObject) -> UploadTicket:
    key = object_key(owner, row.sha256)
    if row.size < settings.multipart_threshold:
        row.upload_id = None
        return UploadTicket(sha256=row.sha256, size=row.size, url=storage.presign_put(key))
    part_size = max(settings.multipart_part_size, math.ceil(row.size / MAX_PARTS))
    count = math.ceil(row.size / part_size)
    row.upload_id = storage.start_multipart(key)
    parts = [
        UploadPart(number=n, url=storage.presign_part(key, row.upload_id, n)) for n in range(1, count + 1)
    ]
    return UploadTicket(
        sha256=row.sha256, size=row.size, upload_id=row.upload_id, part_size=part_size, parts=parts
    )


def complete_upload(
    sessions: sessionmaker[Session], storage: ObjectStore, owner: str, done: UploadCompletion
) -> None:
    """Assemble the parts, measure and hash the stored bytes, and only then
    mark the object complete. A step with transactions of its own: reading
    an object of many GiB takes minutes, and no transaction (on SQLite, the
    database's write lock) is held meanwhile. What is marked is the very
    ticket that was read: if the object was planned again (a new ticket)
    or cleaned up meanwhile, nothing is marked (Conflict)."""
    with sessions() as session:
        row = session.scalar(
            select(StoredObject).where(StoredObject.owner == owner, StoredObject.sha256 == done.sha256)
        )
        if row is None:
            raise NotFound(f"no upload was started for {done.sha256[:12]}")
        if row.complete:
            return
        ticket = and_(
            StoredObject.id == row.id,
            StoredObject.created_at == row.created_at,  # a new plan sets it anew
            StoredObject.complete.is_(False),
        )
        size, upload_id = row.size, row.upload_id
    key = object_key(owner, done.sha256)
    if upload_id:
        if done.upload_id != upload_id:
            raise Conflict("upload id does not match the one handed out")
        _complete_parts(storage, key, upload_id, done)
    stored = storage.size(key)
    if stored is None:
        raise Conflict(f"object {done.sha256[:12]} was not uploaded")
    if stored != size or storage.sha256(key) != done.sha256:
        # The bytes stay: the row is not complete, so nothing uses them; a
        # new upload overwrites them, the sweep removes them after the
        # grace period, and a completion of new bytes meanwhile keeps them.
        raise Invalid(f"object {done.sha256[:12]} arrived corrupted (size or sha256 mismatch)")
    with sessions() as session:
        marked = session.execute(update(StoredObject).where(ticket).values(complete=True, upload_id=None))
        complete = session.scalar(
            select(StoredObject.complete).where(
                StoredObject.owner == owner, StoredObject.sha256 == done.sha256
            )
        )
        session.commit()
    if cast(CursorResult[Any], marked).rowcount != 1 and not complete:
        raise Conflict(
            f"object {done.sha256[:12]} was planned again or cleaned up meanwhile: upload it again"
        )


LOOKUP_CHUNK = 1000


def require_complete(session: Session, owner: str, shas: set[str]) -> None:
    """Every object is this owner's and completely uploaded. Asked in chunks:
    a batch may name tens of thousands (SQLite caps a statement's variables)."""
    wanted = sorted(shas)
    found: set[str] = set()
    for start in range(0, len(wanted), LOOKUP_CHUNK):
        found.update(
            session.scalars(
                select(StoredObject.sha256).where(
                    StoredObject.owner == owner,
                    StoredObject.sha256.in_(wanted[start : start + LOOKUP_CHUNK]),
                    StoredObject.complete.is_(True),
                )
            )
        )
    if missing := sorted(shas - found):
        shown = ", ".join(s[:12] for s in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise Conflict(f"objects not uploaded: {shown}{more}")


def _complete_parts(storage: ObjectStore, key: str, upload_id: str, done: UploadCompletion) -> None:
    """Assemble the parts. A client whose completion timed out, or whose
    answer was lost, asks again; by then storage may have assembled them
    and forgotten the upload id (AWS and MinIO answer NoSuchUpload), or
    assembled them and then failed its answer. If the object is there, the
    sha256 check that follows decides, as for a first completion."""
    try:
        storage.complete_multipart(key, upload_id, [(p.number, p.etag) for p in done.parts])
    except (S3Error, StorageUnavailable) as exc:
        if storage.size(key) is not None:
            log.info("upload %s was already assembled; verifying it", upload_id)
            return
        if isinstance(exc, S3Error):
            raise Invalid(f"storage refused the parts of {done.sha256[:12]} ({exc.code})") from exc
        raise
