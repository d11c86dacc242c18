"""HTTP clients that build a TLS context only when an https URL is used.

httpx builds its TLS context, loading the whole CA bundle, whenever a
client is created, whatever the URLs. That costs 10-20 ms of CPU: on every
CLI start, and before this, on every attempt a runner ran. The local grid
and a private network speak plain HTTP, so the verifying transport is made
on the first https request instead, and kept.
"""

from __future__ import annotations

import threading
from typing import Any

import httpx


class SchemeTransport(httpx.BaseTransport):
    """Plain HTTP through a transport with no CA bundle loaded; https
    through a verifying transport made on first use."""

    def __init__(self) -> None:
        # verify=False only skips loading the CA bundle for this transport,
        # which never carries an https request.
        self._plain = httpx.HTTPTransport(verify=False)
        self._tls: httpx.HTTPTransport | None = None
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme != "https":
            return self._plain.handle_request(request)
        with self._lock:
            if self._tls is None:
                self._tls = httpx.HTTPTransport()
            tls = self._tls
        return tls.handle_request(request)

    def close(self) -> None:
        self._plain.close()
        if self._tls is not None:
            self._tls.close()


def http_client(**kwargs: Any) -> httpx.Client:
    """An httpx.Client (same arguments) over a SchemeTransport."""
    return httpx.Client(transport=SchemeTransport(), **kwargs)


def api_detail(resp: httpx.Response) -> str:
    """What an API error answer says: FastAPI's `detail` (a sentence, or a
    list of validation errors), else the body, in one line of at most 300
    characters."""
    try:
        detail = resp.json().get("detail", resp.text)
    except (ValueError, AttributeError):
        detail = resp.text
    if isinstance(detail, list):
        detail = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
    return " ".join(str(detail).split())[:300]
