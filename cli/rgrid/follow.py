"""Following an execution's logs until it ends."""

from __future__ import annotations

import sys
from collections.abc import Callable

from rgrid.client import Client
from rgrid.wire import ExecutionView, LogChunk

LONG_POLL_S = 20.0


def write_chunk(chunk: LogChunk) -> None:
    """The script's output, byte for byte where it can be: stdout to stdout,
    stderr to stderr, never through Rich."""
    stream = sys.stderr if chunk.stream == "stderr" else sys.stdout
    stream.write(chunk.data)
    stream.flush()


def follow(
    client: Client, execution_id: str, after: int = 0, on_chunk: Callable[[LogChunk], None] = write_chunk
) -> ExecutionView:
    while True:
        page = client.logs(execution_id, after=after, wait=LONG_POLL_S)
        for chunk in page.chunks:
            on_chunk(chunk)
        after = page.next_seq
        if page.final:
            return client.get_execution(execution_id)
