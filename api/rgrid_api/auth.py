"""API keys: generated once, shown once, stored only as a sha256 digest."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import Connection, CursorResult, select, update
from sqlalchemy.orm import Session, sessionmaker

from rgrid.wire import Role
from rgrid_api.db.models import ApiKey
from rgrid_api.settings import Settings

KEY_PREFIX = "rg_"
OWNER_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


T = TypeVar("T")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Caller:
    """Who a request speaks for: the key's row, owner and role."""

    key_id: int
    owner: str
    role: Role

    @property
    def admin(self) -> bool:
        return self.role == Role.ADMIN


@dataclass(frozen=True)
class Caps:
    """An owner's caps: CPUs of its dispatched and running work (None: no
    cap), and executions it may have queued."""

    running_cpus: float | None = None
    queued: int | None = None


def create_key(
    session: Session,
    owner: str,
    name: str = "default",
    key: str | None = None,
    role: Role = Role.USER,
    caps: Caps = Caps(),
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
            ApiKey(
                owner=owner,
                name=name,
                key_hash=digest,
                created_at=datetime.now(UTC),
                role=role.value,
                max_running_cpus=caps.running_cpus,
                max_queued=caps.queued,
            )
        )
    else:
        row.role = role.value
    return key


def caller_for_key(session: Session, key: str) -> Caller | None:
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key)))
    if row is None or row.revoked_at is not None:
        return None
    return Caller(row.id, row.owner, Role(row.role))


def revoke_keys(session: Session, owner: str, name: str | None = None) -> int:
    """Revoke OWNER's keys (only those called NAME, if given); returns how
    many were still in force."""
    query = update(ApiKey).where(ApiKey.owner == owner, ApiKey.revoked_at.is_(None))
    if name is not None:
        query = query.where(ApiKey.name == name)
    result = cast(CursorResult[Any], session.execute(query.values(revoked_at=datetime.now(UTC))))
    return result.rowcount


def set_caps(session: Session, owner: str, caps: Caps, name: str | None = None) -> int:
    """Set the caps of OWNER's keys in force (only those called NAME, if
    given; None clears a cap back to the server's default); returns how
    many keys changed. Servers apply it on their next dispatch round."""
    query = update(ApiKey).where(ApiKey.owner == owner, ApiKey.revoked_at.is_(None))
    if name is not None:
        query = query.where(ApiKey.name == name)
    values = {"max_running_cpus": caps.running_cpus, "max_queued": caps.queued}
    result = cast(CursorResult[Any], session.execute(query.values(**values)))
    return result.rowcount


def default_caps(settings: Settings) -> Caps:
    """The caps of an owner none of whose keys sets its own."""
    return Caps(settings.max_running_cpus, settings.max_queued)


def owner_caps(db: Session | Connection, owners: set[str], default: Caps) -> dict[str, Caps]:
    """Each owner's caps: the largest that its keys in force set; where
    none sets one, the server's default. A key without caps of its own
    neither lifts nor lowers its owner's."""
    running: dict[str, float] = {}
    queued: dict[str, int] = {}
    rows = db.execute(
        select(ApiKey.owner, ApiKey.max_running_cpus, ApiKey.max_queued).where(
            ApiKey.owner.in_(owners), ApiKey.revoked_at.is_(None)
        )
    )
    for owner, own_running, own_queued in rows:
        if own_running is not None:
            running[owner] = max(own_running, running.get(owner, 0.0))
        if own_queued is not None:
            queued[owner] = max(own_queued, queued.get(owner, 0))
    return {
        owner: Caps(running.get(owner, default.running_cpus), queued.get(owner, default.queued))
        for owner in owners
    }


class SecretCache(Generic[T]):
    """Who a secret (an API key, a node's credential) speaks for,
    remembered for a few seconds so that a request costs no database round
    trip for it. A revoked secret stops working within `ttl_s` (and a
    changed role takes effect as soon); a refused one is asked about again
    sooner, so a secret made a moment ago works at once."""

    REFUSED_TTL_S = 1.0
    MAX_ENTRIES = 10_000

    def __init__(
        self, readers: sessionmaker, ttl_s: float, lookup: Callable[[Session, str], T | None]
    ) -> None:
        self._readers = readers
        self._ttl_s = ttl_s
        self._lookup = lookup
        self._entries: dict[str, tuple[T | None, float]] = {}
        self._lock = threading.Lock()

    def cached(self, secret: str) -> tuple[bool, T | None]:
        """(known, who) from memory alone: never waits for the database."""
        with self._lock:
            hit = self._entries.get(hash_key(secret))  # plain secrets are never kept
        if hit is not None and hit[1] > time.monotonic():
            return True, hit[0]
        return False, None

    def renew(self, known: dict[str, T]) -> None:
        """Re-check every secret at once (digest -> who, all that work now):
        each is good for another `ttl_s`, and one cached as someone that is
        no longer there is refused from now. Done once a second for node
        credentials (`rgrid_api.beats`), so a beat never waits for the
        database to re-check its node's credential, and a revoked one stops
        working within a second."""
        now = time.monotonic()
        with self._lock:
            for digest, (who, _until) in list(self._entries.items()):
                if who is not None and digest not in known:
                    self._entries[digest] = (None, now + self.REFUSED_TTL_S)
            if len(known) < self.MAX_ENTRIES:
                for digest, who in known.items():
                    self._entries[digest] = (who, now + self._ttl_s)

    def get(self, secret: str) -> T | None:
        known, who = self.cached(secret)
        if known:
            return who
        now = time.monotonic()
        digest = hash_key(secret)
        with self._readers() as session:
            who = self._lookup(session, secret)
        with self._lock:
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries = {k: v for k, v in self._entries.items() if v[1] > now}
                if len(self._entries) >= self.MAX_ENTRIES:
                    self._entries.clear()
            ttl = self._ttl_s if who is not None else min(self._ttl_s, self.REFUSED_TTL_S)
            self._entries[digest] = (who, now + ttl)
        return who


def runner_token(secret: str, execution_id: str, attempt: int) -> str:
    """A token that lets one runner speak for one attempt and nothing else."""
    msg = f"{execution_id}:{attempt}".encode()
    return hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()


def check_runner_token(secret: str, execution_id: str, attempt: int, token: str) -> bool:
    return hmac.compare_digest(runner_token(secret, execution_id, attempt).encode(), token.encode())
