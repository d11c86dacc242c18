"""Following an execution's logs until it ends."""

from __future__ import annotations

import sys
from collections.abc import Callable

from rgrid.client import Client
from rgrid.wire import ExecutionView, LogChunk, Status

LONG_POLL_S = 20.0
# Until a run starts, how often to ask why it waits.
WAITING_POLL_S = 2.0


def write_chunk(chunk: LogChunk) -> None:
    """The script's output, byte for byte where it can be: stdout to stdout,
    stderr to stderr, never through Rich."""
    stream = sys.stderr if chunk.stream == "stderr" else sys.stdout
    stream.write(chunk.data)
    stream.flush()


def follow(
    client: Client,
    execution_id: str,
    after: int = 0,
    on_chunk: Callable[[LogChunk], None] = write_chunk,
    on_waiting: Callable[[str], None] | None = None,
) -> ExecutionView:
    """Pass every chunk to `on_chunk` until the run ends; its final view.
    With `on_waiting`, while the run has not started, each new reason it
    waits (a cap, a full grid) is passed to it."""
    started = on_waiting is None
    said: str | None = None
    while True:
        page = client.logs(execution_id, after=after, wait=LONG_POLL_S if started else WAITING_POLL_S)
        for chunk in page.chunks:
            on_chunk(chunk)
        after = page.next_seq
        if page.final:
            return client.get_execution(execution_id)
        if on_waiting is not None and not started:
            view = client.get_execution(execution_id)
            started = bool(page.chunks) or view.status not in (Status.QUEUED, Status.DISPATCHED)
            if not started and view.waiting and view.waiting != said:
                said = view.waiting
                on_waiting(said)
