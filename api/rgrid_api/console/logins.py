"""Who a browser is: one-time login links and console sessions.

Both are bearer secrets, so only their sha256 is stored (as API keys are).
A link (`rgrid console`) is used once: it is deleted in the transaction
that opens the session, so two browsers racing with one link cannot both
get in. A session belongs to the API key that opened it and is checked
against that key on every request: revoking the key ends its sessions at
once (no cache), and so does its own expiry.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from rgrid.wire import Role
from rgrid_api.auth import Caller, hash_key
from rgrid_api.db.models import ApiKey, ConsoleLink, ConsoleSession
from rgrid_api.db.times import aware


@dataclass(frozen=True)
class Visitor:
    """A logged-in browser: whom it speaks for, and the token its forms
    must carry back."""

    caller: Caller
    csrf_token: str


def new_link(session: Session, key_id: int, valid_s: float) -> str:
    """A one-time login token for the key's owner."""
    token = secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    session.execute(delete(ConsoleLink).where(ConsoleLink.expires_at < now))
    session.add(
        ConsoleLink(token_hash=hash_key(token), key_id=key_id, expires_at=now + timedelta(seconds=valid_s))
    )
    return token


def use_link(session: Session, token: str) -> int | None:
    """The key a link logs in as, and the link gone; None for a link that
    is unknown, used or expired."""
    now = datetime.now(UTC)
    row = session.get(ConsoleLink, hash_key(token), with_for_update=True)
    if row is None:
        return None
    session.delete(row)
    session.flush()
    return row.key_id if aware(row.expires_at) > now else None


def session_from_link(session: Session, link: str, valid_s: float) -> str | None:
    """A new session's cookie for a link's key, the link used up; None if
    the link is unknown, used or expired, or its key was revoked since."""
    key_id = use_link(session, link)
    if key_id is None:
        return None
    alive = session.scalar(select(ApiKey.id).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None)))
    return open_session(session, key_id, valid_s) if alive is not None else None


def open_session(session: Session, key_id: int, valid_s: float) -> str:
    """A new session for the key; the cookie's value."""
    token = secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at < now))
    session.add(
        ConsoleSession(
            token_hash=hash_key(token),
            key_id=key_id,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            expires_at=now + timedelta(seconds=valid_s),
        )
    )
    return token


def visitor(session: Session, token: str) -> Visitor | None:
    """The session's caller, if the session and its key are both alive."""
    row = session.execute(
        select(ConsoleSession.csrf_token, ConsoleSession.expires_at, ApiKey.id, ApiKey.owner, ApiKey.role)
        .join(ApiKey, ApiKey.id == ConsoleSession.key_id)
        .where(ConsoleSession.token_hash == hash_key(token), ApiKey.revoked_at.is_(None))
    ).first()
    if row is None:
        return None
    csrf, expires, key_id, owner, role = row
    if aware(expires) <= datetime.now(UTC):
        return None
    return Visitor(Caller(key_id, owner, Role(role)), csrf)


def close_session(session: Session, token: str) -> None:
    """Log the browser out."""
    session.execute(delete(ConsoleSession).where(ConsoleSession.token_hash == hash_key(token)))
