"""The one retry policy: what is retried, how long it waits, and that it
gives up."""

from __future__ import annotations

import httpx
import pytest

from rgrid.retry import (
    API_CALLS,
    THROTTLE_WAIT_MAX_S,
    TRANSFERS,
    Backoff,
    call_with_retry,
    retry_after,
    retryable,
    retryable_status,
)


def status_error(code: int, headers: dict[str, str] | None = None) -> httpx.HTTPStatusError:
    request = httpx.Request("GET", "http://example.invalid/")
    response = httpx.Response(code, request=request, headers=headers)
    return httpx.HTTPStatusError("x", request=request, response=response)


@pytest.mark.parametrize("code", [408, 425, 500, 502, 503, 504])
def test_retryable_statuses(code: int) -> None:
    assert retryable_status(code)
    assert retryable(status_error(code))


@pytest.mark.parametrize("code", [400, 401, 403, 404, 409, 410, 413, 422, 429])
def test_other_client_errors_are_final(code: int) -> None:
    # An expired presigned URL answers 403 and will answer 403 again.
    assert not retryable_status(code)
    assert not retryable(status_error(code))


def test_transport_errors_are_retried_and_others_are_not() -> None:
    assert retryable(httpx.ConnectError("refused"))
    assert retryable(httpx.ReadTimeout("slow"))
    assert not retryable(ValueError("bug"))


def test_pauses_double_up_to_the_cap_with_jitter() -> None:
    backoff = Backoff(tries=6, first_s=1.0, max_s=4.0)
    assert list(backoff.pauses(rand=lambda: 1.0)) == [1.0, 2.0, 4.0, 4.0, 4.0]
    assert list(backoff.pauses(rand=lambda: 0.0)) == [0.5, 1.0, 2.0, 2.0, 2.0]
    assert backoff.longest_s == 15.0
    assert backoff.shortest_s == 7.5


def test_schedules_fit_their_purpose() -> None:
    # A user waits on API calls; a storage restart takes tens of seconds,
    # and jitter must never shorten the ride below that.
    assert API_CALLS.longest_s < 5
    assert TRANSFERS.shortest_s >= 30
    assert TRANSFERS.longest_s <= 90


def test_call_retries_until_success_then_stops() -> None:
    calls: list[int] = []
    slept: list[float] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise httpx.ConnectError("refused")
        return "ok"

    assert call_with_retry(flaky, Backoff(5, 0.1, 1.0), "flaky", sleep=slept.append) == "ok"
    assert len(calls) == 3 and len(slept) == 2


def test_call_gives_up_with_the_last_error() -> None:
    calls: list[int] = []

    def down() -> None:
        calls.append(1)
        raise status_error(503)

    with pytest.raises(httpx.HTTPStatusError):
        call_with_retry(down, Backoff(4, 0.1, 1.0), "down", sleep=lambda _s: None)
    assert len(calls) == 4


def test_a_final_error_is_raised_at_once() -> None:
    calls: list[int] = []

    def forbidden() -> None:
        calls.append(1)
        raise status_error(403)

    with pytest.raises(httpx.HTTPStatusError):
        call_with_retry(forbidden, Backoff(4, 0.1, 1.0), "forbidden", sleep=lambda _s: None)
    assert len(calls) == 1


def test_a_rate_limit_is_waited_out_as_the_server_asks_even_for_a_call_tried_once() -> None:
    calls: list[int] = []
    slept: list[float] = []

    def limited() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise status_error(429, {"Retry-After": "2"})
        return "ok"

    once = Backoff(tries=1, first_s=0.0, max_s=0.0)
    assert call_with_retry(limited, once, "create", sleep=slept.append) == "ok"
    assert slept == [2.0, 2.0]


def test_a_rate_limit_that_never_lifts_is_given_up_within_the_bound() -> None:
    slept: list[float] = []

    def limited() -> None:
        raise status_error(429, {"Retry-After": "7"})

    with pytest.raises(httpx.HTTPStatusError):
        call_with_retry(limited, API_CALLS, "list", sleep=slept.append)
    assert sum(slept) <= THROTTLE_WAIT_MAX_S and len(slept) == int(THROTTLE_WAIT_MAX_S // 7)


def test_a_429_without_retry_after_is_a_cap_and_final() -> None:
    calls: list[int] = []

    def capped() -> None:
        calls.append(1)
        raise status_error(429)

    with pytest.raises(httpx.HTTPStatusError):
        call_with_retry(capped, API_CALLS, "create", sleep=lambda _s: None)
    assert len(calls) == 1
    assert retry_after(status_error(429)) is None
    assert retry_after(status_error(429, {"Retry-After": "soon"})) is None
