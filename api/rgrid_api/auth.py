"""API keys: generated once, shown once, stored only as a sha256 digest."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from rgrid_api.db.models import ApiKey

KEY_PREFIX = "rg_"
OWNER_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def create_key(session: Session, owner: str, name: str = "default", key: str | None = None) -> str:
    """Store a key for `owner` and return the plain key (never stored)."""
    if not OWNER_PATTERN.match(owner):
        raise ValueError(f"owner must match {OWNER_PATTERN.pattern}")
    key = key or new_key()
    digest = hash_key(key)
    if session.scalar(select(ApiKey).where(ApiKey.key_hash == digest)) is None:
        session.add(ApiKey(owner=owner, name=name, key_hash=digest, created_at=datetime.now(UTC)))
        session.commit()
    return key


def owner_for_key(session: Session, key: str) -> str | None:
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key)))
    if row is None or row.revoked_at is not None:
        return None
    return row.owner


def runner_token(secret: str, execution_id: str, attempt: int) -> str:
    """A token that lets one runner speak for one attempt and nothing else."""
    msg = f"{execution_id}:{attempt}".encode()
    return hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()


def check_runner_token(secret: str, execution_id: str, attempt: int, token: str) -> bool:
    return hmac.compare_digest(runner_token(secret, execution_id, attempt), token)
