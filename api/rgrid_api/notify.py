"""In-process change notifications.

Writers (request threads, the dispatcher) call `changed(execution_id)`;
long-polling readers await it. This is what makes logs arrive well under a
second behind and lets the dispatcher start a job within milliseconds instead
of on the next poll. Readers still re-check the database on a short timeout,
so a change made by another server process is seen too.
"""

from __future__ import annotations

import asyncio
import threading

MAX_TRACKED = 10_000


class ChangeFeed:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: dict[str, asyncio.Event] = {}
        self._versions: dict[str, int] = {}
        self.new_work = threading.Event()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def changed(self, execution_id: str) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._fire, execution_id)

    def work_queued(self) -> None:
        self.new_work.set()

    def _fire(self, execution_id: str) -> None:
        if len(self._versions) >= MAX_TRACKED:
            # Forgetting versions only costs waiting readers one early wake-up.
            self._versions.clear()
        self._versions[execution_id] = self._versions.get(execution_id, 0) + 1
        event = self._events.pop(execution_id, None)
        if event is not None:
            event.set()

    def version(self, execution_id: str) -> int:
        """Take before reading the database; pass to `wait` so that a change
        landing between the read and the wait is not missed."""
        return self._versions.get(execution_id, 0)

    async def wait(self, execution_id: str, seen: int, timeout: float) -> None:
        if self._versions.get(execution_id, 0) != seen:
            return
        event = self._events.setdefault(execution_id, asyncio.Event())
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass
