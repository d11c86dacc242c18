"""API keys: generated once, shown once, stored only as a sha256 digest."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session, sessionmaker

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


def revoke_keys(session: Session, owner: str, name: str | None = None) -> int:
    """Revoke OWNER's keys (only those called NAME, if given); returns how
    many were still in force."""
    query = update(ApiKey).where(ApiKey.owner == owner, ApiKey.revoked_at.is_(None))
    if name is not None:
        query = query.where(ApiKey.name == name)
    result = cast(CursorResult[Any], session.execute(query.values(revoked_at=datetime.now(UTC))))
    session.commit()
    return result.rowcount


class OwnerCache:
    """Who an API key speaks for, remembered for a few seconds so that a
    request costs no database round trip for it. A revoked key stops
    working within `ttl_s`; a refused key is asked about again sooner, so a
    key created a moment ago works at once."""

    REFUSED_TTL_S = 1.0
    MAX_ENTRIES = 10_000

    def __init__(self, readers: sessionmaker, ttl_s: float) -> None:
        self._readers = readers
        self._ttl_s = ttl_s
        self._entries: dict[str, tuple[str | None, float]] = {}
        self._lock = threading.Lock()

    def cached(self, key: str) -> tuple[bool, str | None]:
        """(known, owner) from memory alone: never waits for the database."""
        with self._lock:
            hit = self._entries.get(hash_key(key))  # plain keys are never kept
        if hit is not None and hit[1] > time.monotonic():
            return True, hit[0]
        return False, None

    def owner(self, key: str) -> str | None:
        known, owner = self.cached(key)
        if known:
            return owner
        now = time.monotonic()
        digest = hash_key(key)
        with self._readers() as session:
            owner = owner_for_key(session, key)
        with self._lock:
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries = {k: v for k, v in self._entries.items() if v[1] > now}
                if len(self._entries) >= self.MAX_ENTRIES:
                    self._entries.clear()
            ttl = self._ttl_s if owner else min(self._ttl_s, self.REFUSED_TTL_S)
            self._entries[digest] = (owner, now + ttl)
        return owner


def runner_token(secret: str, execution_id: str, attempt: int) -> str:
    """A token that lets one runner speak for one attempt and nothing else."""
    msg = f"{execution_id}:{attempt}".encode()
    return hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()


def check_runner_token(secret: str, execution_id: str, attempt: int, token: str) -> bool:
    return hmac.compare_digest(runner_token(secret, execution_id, attempt), token)
