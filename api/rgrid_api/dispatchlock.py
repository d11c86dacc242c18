"""One lock for what decides whether, and how much, may be claimed:
dispatch rounds across servers (two never hand out the same free CPUs) and
a Ray token's rotation (which stops them). On PostgreSQL an advisory lock
held to the end of the transaction; SQLite serialises its writers already
(every transaction begins IMMEDIATE)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rgrid_api.db.engine import is_postgres

DISPATCH_LOCK_KEY = 0x726772696403  # "rgrid" + 3


def hold(session: Session) -> None:
    """Take the lock for the rest of the session's transaction."""
    if is_postgres(session.get_bind()):
        session.execute(select(func.pg_advisory_xact_lock(DISPATCH_LOCK_KEY)))
