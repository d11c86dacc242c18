"""The answers for final executions, kept in memory.

An execution that has ended never changes again: its status, attempts,
exit code and cost are settled (a retry is a new execution). So its
`GET /v1/executions/{id}` answer is kept, encoded, and served again without
a database read. This is what `rgrid status` and every follower's last
look at a finished run cost. Only exact ids are looked up here, keyed with
the owner who asked, so tenants never see each other's answers; the cache
is bounded and forgets the least recently used first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict


class FinalViews:
    def __init__(self, max_entries: int = 10_000) -> None:
        self._max = max_entries
        self._entries: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, owner: str, execution_id: str) -> bytes | None:
        with self._lock:
            body = self._entries.get((owner, execution_id))
            if body is not None:
                self._entries.move_to_end((owner, execution_id))
            return body

    def put(self, owner: str, execution_id: str, body: bytes) -> None:
        with self._lock:
            self._entries[(owner, execution_id)] = body
            self._entries.move_to_end((owner, execution_id))
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
