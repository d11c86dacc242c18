"""The one retry policy for every call that crosses the network: the CLI's
API calls, the runner's calls back into the API, and transfers to and from
object storage.

A call is tried again only when trying again can help: the connection failed
or timed out, or the server answered 5xx, 408 or 425. Any other 4xx is
final (a presigned URL that expired answers 403, and will answer 403 again).
Pauses grow exponentially up to a cap, with jitter, so that many clients that
failed together do not come back in lockstep.

A 429 with Retry-After (a rate limit) is waited out as the server asks, even
for a call that is otherwise tried once: the server refused it, so repeating
it cannot do anything twice. A 429 without Retry-After (a cap) is final.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import httpx

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRYABLE_4XX = frozenset({408, 425})
# How long, in all, one call waits out rate limits before giving up.
THROTTLE_WAIT_MAX_S = 60.0


def retryable_status(code: int) -> bool:
    """A status worth another try: the server's fault, or 'not now'."""
    return code >= 500 or code in RETRYABLE_4XX


def retryable(exc: BaseException) -> bool:
    """The retry predicate: transport failures and retryable statuses."""
    if isinstance(exc, httpx.TransportError):
        return True
    if isinstance(exc, httpx.HTTPStatusError):
        return retryable_status(exc.response.status_code)
    return False


def retry_after(exc: BaseException) -> float | None:
    """The seconds a 429 asks to wait (its Retry-After), else None."""
    if not isinstance(exc, httpx.HTTPStatusError) or exc.response.status_code != 429:
        return None
    try:
        wait = float(exc.response.headers.get("Retry-After", ""))
    except ValueError:
        return None
    # Never sooner than a second: a server saying 0 must not get a busy loop.
    return max(1.0, wait) if math.isfinite(wait) else None


def raise_for_retryable(resp: httpx.Response) -> httpx.Response:
    """Raise HTTPStatusError only for a status worth retrying (or a 429 to
    wait out); every other answer is returned for the caller's own error
    mapping."""
    if retryable_status(resp.status_code) or (resp.status_code == 429 and "Retry-After" in resp.headers):
        raise httpx.HTTPStatusError(f"HTTP {resp.status_code}", request=resp.request, response=resp)
    return resp


@dataclass(frozen=True)
class Backoff:
    """`tries` calls in all, the pause doubling from `first_s` up to `max_s`.
    Each pause is drawn from [d/2, d] (equal jitter)."""

    tries: int
    first_s: float
    max_s: float

    def pauses(self, rand: Callable[[], float] = random.random) -> Iterator[float]:
        """The pauses between tries: tries - 1 of them."""
        delay = self.first_s
        for _ in range(self.tries - 1):
            yield delay / 2 + rand() * delay / 2
            delay = min(delay * 2, self.max_s)

    @property
    def longest_s(self) -> float:
        """The most the pauses can add up to."""
        return sum(self.pauses(rand=lambda: 1.0))

    @property
    def shortest_s(self) -> float:
        """The least the pauses can add up to: how long a failure is ridden out
        at minimum, whatever the jitter draws."""
        return sum(self.pauses(rand=lambda: 0.0))


# The CLI's calls to the API: a user is waiting, give up within seconds.
API_CALLS = Backoff(tries=4, first_s=0.25, max_s=2.0)
# A runner's calls to the API: an API restart takes a few seconds; the
# attempt's lease (30 s) bounds how long waiting makes sense.
RUNNER_CALLS = Backoff(tries=6, first_s=0.2, max_s=4.0)
# Transfers to storage: a restarting S3 server errs for tens of seconds, so
# they ride out at least 30 s (at most about a minute).
TRANSFERS = Backoff(tries=9, first_s=0.5, max_s=15.0)


def call_with_retry(
    action: Callable[[], T],
    backoff: Backoff,
    what: str,
    retry_if: Callable[[BaseException], bool] = retryable,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call `action` until it returns, raises something `retry_if` rejects,
    or the tries run out (the last exception is raised). Rate limits are
    waited out on top, up to THROTTLE_WAIT_MAX_S in all."""
    pauses = backoff.pauses()
    throttled_s = 0.0
    while True:
        try:
            return action()
        except Exception as exc:
            wait = retry_after(exc)
            if wait is not None:
                if throttled_s + wait > THROTTLE_WAIT_MAX_S:
                    raise
                throttled_s += wait
                log.info("%s was rate limited; retrying in %.2f s", what, wait)
                sleep(wait)
                continue
            pause = next(pauses, None)
            if pause is None or not retry_if(exc):
                raise
            log.info("%s failed (%s); retrying in %.2f s", what, exc.__class__.__name__, pause)
        sleep(pause)
