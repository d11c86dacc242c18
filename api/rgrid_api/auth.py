"""API keys: generated once, shown once, stored only as a sha256 digest."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Connection, CursorResult, select, update
from sqlalchemy.orm import Session, sessionmaker

from rgrid.wire import Role
from rgrid_api.db.models import ApiKey

KEY_PREFIX = "rg_"
OWNER_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Caller:
    """Who a request speaks for: the key's owner and role, and the key's own
    caps (None: the server's default)."""

    key_id: int
    owner: str
    role: Role
    max_running_cpus: float | None = None
    max_queued: int | None = None

    @property
    def admin(self) -> bool:
        return self.role == Role.ADMIN


def create_key(
    session: Session,
    owner: str,
    name: str = "default",
    key: str | None = None,
    role: Role = Role.USER,
) -> str:
    """Store a key for `owner` and return the plain key (never stored). A
    given key that is stored already keeps its row and takes `role` (the
    server's bootstrap key, made again at each start)."""
    if not OWNER_PATTERN.match(owner):
        raise ValueError(f"owner must match {OWNER_PATTERN.pattern}")
    key = key or new_key()
    digest = hash_key(key)
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == digest))
    if row is None:
        session.add(
            ApiKey(owner=owner, name=name, key_hash=digest, created_at=datetime.now(UTC), role=role.value)
        )
    else:
        row.role = role.value
    session.commit()
    return key


def caller_for_key(session: Session, key: str) -> Caller | None:
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key)))
    if row is None or row.revoked_at is not None:
        return None
    return Caller(row.id, row.owner, Role(row.role), row.max_running_cpus, row.max_queued)


def revoke_keys(session: Session, owner: str, name: str | None = None) -> int:
    """Revoke OWNER's keys (only those called NAME, if given); returns how
    many were still in force."""
    query = update(ApiKey).where(ApiKey.owner == owner, ApiKey.revoked_at.is_(None))
    if name is not None:
        query = query.where(ApiKey.name == name)
    result = cast(CursorResult[Any], session.execute(query.values(revoked_at=datetime.now(UTC))))
    session.commit()
    return result.rowcount


def set_caps(session: Session, key: str, max_running_cpus: float | None, max_queued: int | None) -> None:
    """Give a key its own caps (None leaves the server's default)."""
    session.execute(
        update(ApiKey)
        .where(ApiKey.key_hash == hash_key(key))
        .values(max_running_cpus=max_running_cpus, max_queued=max_queued)
    )
    session.commit()


def running_caps(session: Session | Connection, owners: set[str], default: float | None) -> dict[str, float]:
    """Each owner's running-CPU cap: the largest among its keys in force (a
    key without its own takes `default`). An owner without one is absent."""
    caps: dict[str, float] = {}
    uncapped: set[str] = set()
    rows = session.execute(
        select(ApiKey.owner, ApiKey.max_running_cpus).where(
            ApiKey.owner.in_(owners), ApiKey.revoked_at.is_(None)
        )
    )
    for owner, own in rows:
        cap = own if own is not None else default
        if cap is None:
            uncapped.add(owner)
        else:
            caps[owner] = max(cap, caps.get(owner, 0.0))
    return {owner: cap for owner, cap in caps.items() if owner not in uncapped}


class CallerCache:
    """Who an API key speaks for, remembered for a few seconds so that a
    request costs no database round trip for it. A revoked key stops
    working within `ttl_s` (and a changed role or cap takes effect as
    soon); a refused key is asked about again sooner, so a key created a
    moment ago works at once."""

    REFUSED_TTL_S = 1.0
    MAX_ENTRIES = 10_000

    def __init__(self, readers: sessionmaker, ttl_s: float) -> None:
        self._readers = readers
        self._ttl_s = ttl_s
        self._entries: dict[str, tuple[Caller | None, float]] = {}
        self._lock = threading.Lock()

    def cached(self, key: str) -> tuple[bool, Caller | None]:
        """(known, caller) from memory alone: never waits for the database."""
        with self._lock:
            hit = self._entries.get(hash_key(key))  # plain keys are never kept
        if hit is not None and hit[1] > time.monotonic():
            return True, hit[0]
        return False, None

    def caller(self, key: str) -> Caller | None:
        known, caller = self.cached(key)
        if known:
            return caller
        now = time.monotonic()
        digest = hash_key(key)
        with self._readers() as session:
            caller = caller_for_key(session, key)
        with self._lock:
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries = {k: v for k, v in self._entries.items() if v[1] > now}
                if len(self._entries) >= self.MAX_ENTRIES:
                    self._entries.clear()
            ttl = self._ttl_s if caller else min(self._ttl_s, self.REFUSED_TTL_S)
            self._entries[digest] = (caller, now + ttl)
        return caller


def runner_token(secret: str, execution_id: str, attempt: int) -> str:
    """A token that lets one runner speak for one attempt and nothing else."""
    msg = f"{execution_id}:{attempt}".encode()
    return hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()


def check_runner_token(secret: str, execution_id: str, attempt: int, token: str) -> bool:
    return hmac.compare_digest(runner_token(secret, execution_id, attempt), token)
