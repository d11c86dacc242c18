"""The one HTTP client of an attempt process, reused by every attempt it runs.

The attempt service keeps its attempt processes and runs attempt after
attempt in them. A client per attempt cost a TLS context and new
connections each time (the runner's largest CPU cost); one per process
keeps its connections to the API and to storage alive across attempts.
httpx clients are thread-safe, so the log shipper's thread shares it with
the attempt's own.
"""

from __future__ import annotations

import threading

import httpx

from rgrid.http import http_client

_lock = threading.Lock()
_client: httpx.Client | None = None


def process_client() -> httpx.Client:
    global _client
    with _lock:
        if _client is None:
            _client = http_client(timeout=60.0)
        return _client
