"""Cleaning up what abandoned uploads leave: rows of objects never
completed, the bytes a client may have put under them, and multipart
uploads storage keeps (and bills) until someone aborts them.

Run by the active monitor every few minutes. Only what is older than the
grace period goes: an upload in progress is at most that old, since
planning it again restarts its clock. The sweep owns its transactions: a
row's delete is committed before its bytes go, so no complete-looking row
ever points at bytes that are gone.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, delete, select
from sqlalchemy.orm import Session, sessionmaker

from rgrid_api.db.models import StoredObject
from rgrid_api.db.times import utcnow
from rgrid_api.storage import Storage, object_key

log = logging.getLogger(__name__)

BATCH = 500


def sweep_abandoned(sessions: sessionmaker[Session], storage: Storage, grace_s: float) -> int:
    """Delete incomplete objects and abort multipart uploads older than
    `grace_s`; returns how many it removed."""
    cutoff = utcnow() - timedelta(seconds=grace_s)
    with sessions() as session:
        rows = list(
            session.scalars(
                select(StoredObject)
                .where(StoredObject.complete.is_(False), StoredObject.created_at < cutoff)
                .limit(BATCH)
            )
        )
        removed = 0
        for row in rows:
            key, upload_id = object_key(row.owner, row.sha256), row.upload_id
            # Only if it is still incomplete and old: its owner may have
            # completed it, or planned it again, since it was read.
            gone = session.execute(
                delete(StoredObject)
                .where(
                    StoredObject.id == row.id,
                    StoredObject.complete.is_(False),
                    StoredObject.created_at < cutoff,
                )
                .execution_options(synchronize_session=False)
            )
            session.commit()
            if cast(CursorResult[Any], gone).rowcount != 1:
                continue
            removed += 1
            if upload_id:
                storage.abort_multipart(key, upload_id)
            storage.delete(key)
    stale = storage.stale_multiparts(cutoff)
    for key, upload_id in stale:
        storage.abort_multipart(key, upload_id)
    if removed or stale:
        log.info("removed %d abandoned uploads and %d stale multipart uploads", removed, len(stale))
    return removed + len(stale)
