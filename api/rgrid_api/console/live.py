"""The live parts of the console, as server-sent events: a run's log as
it is written, the runs list's unfinished rows, a batch's progress; and a
run's whole log as a download.

A stream re-reads only what it shows (the new chunks, the rows still
running, one batch's counts), wakes on this server's change feed and
re-checks the database at least every RECHECK_S (another server's
writes), so a new log line reaches the browser well within a second. Each
open stream counts against its key's long-poll cap. The browser's
EventSource reconnects by itself and says the last event it got
(`Last-Event-ID`), so a dropped connection loses no line.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from rgrid.wire import BatchStatus, LogPage
from rgrid_api.batches import batch_counts, batch_status, find_batch
from rgrid_api.console.guard import LiveVisitor
from rgrid_api.console.logtail import whole_log
from rgrid_api.console.pages import progress
from rgrid_api.console.render import render
from rgrid_api.console.runs import run_rows
from rgrid_api.db.times import aware
from rgrid_api.deps import AppState, State
from rgrid_api.executions import find_execution, log_page
from rgrid_api.throttle import Throttled

router = APIRouter(prefix="/ui", include_in_schema=False)

RECHECK_S = 0.5
ROWS_EVERY_S = 1.0
KEEPALIVE_S = 15.0
STREAM_FOR_S = 3600.0  # then the browser reconnects: no stream lives forever
MAX_LIVE_ROWS = 500


def event(name: str, data: object, event_id: int | None = None) -> str:
    """One server-sent event; the data as one line of JSON."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {name}\ndata: {json.dumps(data)}\n\n"


def streamed(state: AppState, key_id: int, events: Callable[[], AsyncIterator[str]]) -> StreamingResponse:
    """`events` as an event stream, holding one of the key's long-poll
    slots while it runs; a key with every slot taken gets a `busy` event."""

    async def body() -> AsyncIterator[str]:
        try:
            with state.long_polls.hold(key_id):
                async for item in events():
                    yield item
        except Throttled as exc:
            yield event("busy", str(exc))

    return StreamingResponse(body(), media_type="text/event-stream", headers={"X-Accel-Buffering": "no"})


@router.get("/runs/{execution_id}/events")
async def run_events(
    execution_id: str,
    visitor: LiveVisitor,
    state: State,
    after: int = Query(0, ge=0, le=2**31 - 1),
    last_event_id: int | None = Header(None, ge=0, le=2**31 - 1),
) -> StreamingResponse:
    """`log` events (each chunk, with its seq as the event id), `status`
    when the run moves, and `end` once it has ended and all is sent."""
    owner = visitor.caller.owner
    full_id, _first = await run_in_threadpool(_page, state, owner, execution_id, 0)

    async def events() -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        stop_at = loop.time() + STREAM_FOR_S
        seq = max(after, last_event_id or 0)
        shown = None
        quiet_since = loop.time()
        while loop.time() < stop_at:
            seen = state.feed.version(full_id)
            _id, page = await run_in_threadpool(_page, state, owner, full_id, seq)
            for chunk in page.chunks:
                yield event("log", {"stream": chunk.stream, "data": chunk.data}, chunk.seq)
            seq = page.next_seq
            if page.status != shown:
                shown = page.status
                yield event("status", page.status.value)
            if page.final:
                yield event("end", page.status.value)
                return
            if page.chunks:
                quiet_since = loop.time()
                continue
            if loop.time() - quiet_since > KEEPALIVE_S:
                quiet_since = loop.time()
                yield ": keep-alive\n\n"
            await state.feed.wait(full_id, seen, RECHECK_S)

    return streamed(state, visitor.caller.key_id, events)


def _page(state: AppState, owner: str, execution_id: str, after: int) -> tuple[str, LogPage]:
    with state.readers() as session:
        return log_page(session, owner, execution_id, after)


@router.get("/runs/{execution_id}/log.txt")
def whole_log_download(execution_id: str, visitor: LiveVisitor, state: State) -> StreamingResponse:
    """The whole log, stdout and stderr in the order they were written."""
    with state.readers() as session:
        full_id = find_execution(session, visitor.caller.owner, execution_id).id
    return StreamingResponse(
        whole_log(state.readers, full_id),
        media_type="text/plain; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{full_id}.log"'},
    )


@router.get("/live/rows")
async def row_events(
    request: Request, visitor: LiveVisitor, state: State, ids: str = ""
) -> StreamingResponse:
    """A `row` event (the row's HTML, rendered as the page renders it)
    whenever one of these unfinished runs changes; ends once all ended."""
    owner = visitor.caller.owner
    wanted = [i for i in ids.split(",") if i][:MAX_LIVE_ROWS]

    def read() -> list[Any]:
        with state.readers() as session:
            return run_rows(session, owner, wanted)

    async def events() -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        stop_at = loop.time() + STREAM_FOR_S
        last: dict[str, tuple[object, ...]] = {}
        while wanted and loop.time() < stop_at:
            for row in await run_in_threadpool(read):
                shown = (row.status, row.exit_code, row.started_at, row.cost_eur)
                if last.get(row.id) != shown:
                    if row.id in last:
                        yield event("row", {"id": row.id, "html": render("row.html", row=row)})
                    last[row.id] = shown
                if row.final:
                    wanted.remove(row.id)
            await asyncio.sleep(ROWS_EVERY_S)
        yield event("end", "")

    return streamed(state, visitor.caller.key_id, events)


@router.get("/batches/{batch_id}/events")
async def batch_events(batch_id: str, visitor: LiveVisitor, state: State) -> StreamingResponse:
    """A `progress` event whenever the batch's counts move; `end` once it ended."""
    owner = visitor.caller.owner

    def read() -> tuple[dict[str, object], BatchStatus]:
        with state.readers() as session:
            b = find_batch(session, owner, batch_id)
            counts = batch_counts(session, [b.id]).get(b.id, {})
            return progress(b.total, counts, aware(b.created_at)), batch_status(b, counts)

    await run_in_threadpool(read)  # a missing or another owner's batch: 404 before streaming

    async def events() -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        stop_at = loop.time() + STREAM_FOR_S
        last = None
        while loop.time() < stop_at:
            now, status = await run_in_threadpool(read)
            if (now["counts"], status) != last:
                last = (now["counts"], status)
                yield event("progress", {**now, "status": status.value})
            if status != BatchStatus.RUNNING:
                yield event("end", status.value)
                return
            await asyncio.sleep(ROWS_EVERY_S)

    return streamed(state, visitor.caller.key_id, events)
