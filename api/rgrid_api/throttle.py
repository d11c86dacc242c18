"""Per-key limits that protect the API itself: a token bucket for the
request rate, and a count of the long-polls a key holds open.

Both live in the memory of one server: a key talking to N servers gets N
times the rate, which is fine for a limit meant to stop a runaway script,
not to meter use. Their state is keyed by the key's row id, never the key.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass


class Throttled(Exception):
    """Too many requests: the caller may try again after `retry_after_s`."""

    status_code = 429

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    @property
    def retry_after(self) -> str:
        """The Retry-After header: whole seconds, at least one."""
        return str(max(1, math.ceil(self.retry_after_s)))


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimit:
    """`rate` requests a second per key, with bursts up to `burst`."""

    MAX_KEYS = 100_000

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[int, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, key_id: int) -> None:
        """Spend one token of the key's bucket, or raise Throttled."""
        if self.rate <= 0:
            return
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(key_id)
            if bucket is None:
                if len(self._buckets) >= self.MAX_KEYS:
                    self._buckets.clear()  # every bucket refills to full: the safe side
                bucket = self._buckets[key_id] = _Bucket(self.burst, now)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return
            wait = (1 - bucket.tokens) / self.rate
        raise Throttled(f"rate limit: at most {self.rate:g} requests a second per API key", wait)


class LongPolls:
    """At most `cap` long-polls open per key: each one holds a connection
    and a slot of the server for up to the poll's length."""

    RETRY_S = 1.0

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._open: dict[int, int] = {}
        self._lock = threading.Lock()

    @contextmanager
    def hold(self, key_id: int) -> Iterator[None]:
        with self._lock:
            if self._open.get(key_id, 0) >= self.cap:
                raise Throttled(
                    f"at most {self.cap} waiting requests (logs --follow) per API key", self.RETRY_S
                )
            self._open[key_id] = self._open.get(key_id, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                left = self._open[key_id] - 1
                if left:
                    self._open[key_id] = left
                else:
                    del self._open[key_id]
