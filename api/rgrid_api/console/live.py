"""The live parts of the console, as server-sent events: a run's log as
it is written, a list's unfinished rows, a batch's progress; and the
long answer that is not live, a run's whole log as a download.

A stream re-reads only what it shows (the new chunks, the rows still
running, one batch's counts), wakes on this server's change feed and
re-checks the database at least every RECHECK_S (another server's
writes), so a new log line reaches the browser well within a second. Each
open stream holds one of its key's long-poll slots, and re-checks its
session every SESSION_CHECK_S: a stream outlives neither a logout nor its
key. After STREAM_FOR_S a stream closes and the browser's EventSource
reconnects by itself, saying the last event it got (`Last-Event-ID`), so
no line is lost.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

from fastapi import APIRouter, Header, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from rgrid.wire import BatchStatus, LogPage
from rgrid_api.batches import batch_counts, batch_progress, batch_status, find_batch
from rgrid_api.console.guard import LiveVisitor, still_logged_in
from rgrid_api.console.logtail import log_text_page
from rgrid_api.console.render import render
from rgrid_api.console.runlist import RunRow, run_rows
from rgrid_api.deps import AppState, State
from rgrid_api.executions import find_execution, log_page
from rgrid_api.ids import ID_LENGTH
from rgrid_api.throttle import Throttled

router = APIRouter(prefix="/ui", include_in_schema=False)

RECHECK_S = 0.5
ROWS_EVERY_S = 1.0
SESSION_CHECK_S = 5.0
KEEPALIVE_S = 15.0
STREAM_FOR_S = 600.0
MAX_LIVE_ROWS = 500
DURATION_STEP_S = 5  # a running row is redrawn when its duration passes a step


def event(name: str, data: object, event_id: int | None = None) -> str:
    """One server-sent event; the data as one line of JSON."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {name}\ndata: {json.dumps(data)}\n\n"


def streamed(
    request: Request, state: AppState, key_id: int, events: Callable[[], AsyncIterator[str]]
) -> StreamingResponse:
    """`events` as an event stream that holds one of the key's long-poll
    slots and ends (`logged-out`) once its session is gone; a key with
    every slot taken gets one `busy` event."""

    async def body() -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        checked = loop.time()
        try:
            with state.long_polls.hold(key_id):
                async for item in events():
                    if loop.time() - checked > SESSION_CHECK_S:
                        checked = loop.time()
                        if not await still_logged_in(request, state):
                            yield event("logged-out", "")
                            return
                    yield item
        except Throttled as exc:
            yield event("busy", str(exc))

    return StreamingResponse(body(), media_type="text/event-stream", headers={"X-Accel-Buffering": "no"})


@router.get("/runs/{execution_id}/events")
async def run_events(
    request: Request,
    execution_id: str,
    visitor: LiveVisitor,
    state: State,
    after: int = Query(0, ge=0, le=2**31 - 1),
    last_event_id: int | None = Header(None, ge=0, le=2**31 - 1),
) -> StreamingResponse:
    """`log` events (each chunk, with its seq as the event id), `status`
    when the run moves, and `end` once it has ended and all is sent."""
    owner = visitor.caller.owner
    full_id = await run_in_threadpool(_full_id, state, owner, execution_id)

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

    return streamed(request, state, visitor.caller.key_id, events)


def _full_id(state: AppState, owner: str, execution_id: str) -> str:
    with state.readers() as session:
        return find_execution(session, owner, execution_id).id


def _page(state: AppState, owner: str, execution_id: str, after: int) -> tuple[str, LogPage]:
    with state.readers() as session:
        return log_page(session, owner, execution_id, after)


@router.get("/runs/{execution_id}/log.txt")
async def run_log(
    request: Request, execution_id: str, visitor: LiveVisitor, state: State
) -> StreamingResponse:
    """The whole log, stdout and stderr in the order they were written, a
    page of chunks at a time; like a stream it holds a long-poll slot and
    stops once its session is gone."""
    full_id = await run_in_threadpool(_full_id, state, visitor.caller.owner, execution_id)

    async def body() -> AsyncIterator[str]:
        try:
            with state.long_polls.hold(visitor.caller.key_id):
                after = 0
                while await still_logged_in(request, state):
                    text, after = await run_in_threadpool(log_text_page, state.readers, full_id, after)
                    if not text:
                        return
                    yield text
        except Throttled as exc:
            yield f"rgrid: {exc}\n"

    return StreamingResponse(
        body(),
        media_type="text/plain; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{full_id}.log"'},
    )


@router.get("/live/rows")
async def row_events(
    request: Request, visitor: LiveVisitor, state: State, ids: str = ""
) -> StreamingResponse:
    """A `row` event (the row's HTML, rendered as the page renders it)
    whenever one of these unfinished runs changes; `end` once all ended."""
    owner = visitor.caller.owner
    wanted = list(dict.fromkeys(i for i in ids.split(",") if i))
    if len(wanted) > MAX_LIVE_ROWS or not all(len(i) == ID_LENGTH and i.isalnum() for i in wanted):
        raise HTTPException(400, f"ids: at most {MAX_LIVE_ROWS} run ids, separated by commas")

    def read() -> list[RunRow]:
        with state.readers() as session:
            return run_rows(session, owner, wanted)

    async def events() -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        stop_at = loop.time() + STREAM_FOR_S
        last: dict[str, tuple[object, ...]] = {}
        quiet_since = loop.time()
        while loop.time() < stop_at:
            rows = await run_in_threadpool(read)
            # Ids that are not the owner's runs (or no runs) are not followed.
            wanted[:] = [row.id for row in rows if not row.final]
            for row in rows:
                duration_step = int((row.duration_s or 0) // DURATION_STEP_S)
                shown = (row.status, row.exit_code, row.started_at, row.cost_eur, duration_step)
                # Sent at the first read too: a stream that reconnects may
                # have missed a change, and an unchanged row is redrawn as it was.
                if last.get(row.id) != shown:
                    quiet_since = loop.time()
                    yield event("row", {"id": row.id, "html": render("row.html", row=row)})
                last[row.id] = shown
            if not wanted:
                yield event("end", "")
                return
            if loop.time() - quiet_since > KEEPALIVE_S:
                quiet_since = loop.time()
                yield ": keep-alive\n\n"  # and the session is checked before it goes
            await asyncio.sleep(ROWS_EVERY_S)

    return streamed(request, state, visitor.caller.key_id, events)


@router.get("/batches/{batch_id}/events")
async def batch_events(
    request: Request, batch_id: str, visitor: LiveVisitor, state: State
) -> StreamingResponse:
    """A `progress` event whenever the batch's counts move; `end` once it ended."""
    owner = visitor.caller.owner

    def read() -> tuple[dict[str, object], BatchStatus]:
        with state.readers() as session:
            b = find_batch(session, owner, batch_id)
            counts = batch_counts(session, [b.id]).get(b.id, {})
            now = batch_progress(b, counts, datetime.now(UTC))
            return now.__dict__, batch_status(b, counts)

    await run_in_threadpool(read)  # a missing or another owner's batch: 404 before streaming

    async def events() -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        stop_at = loop.time() + STREAM_FOR_S
        last = None
        quiet_since = loop.time()
        while loop.time() < stop_at:
            now, status = await run_in_threadpool(read)
            if (now["counts"], status) != last:
                last = (now["counts"], status)
                quiet_since = loop.time()
                yield event("progress", {**now, "status": status.value})
            elif loop.time() - quiet_since > KEEPALIVE_S:
                quiet_since = loop.time()
                yield ": keep-alive\n\n"  # and the session is checked before it goes
            if status != BatchStatus.RUNNING:
                yield event("end", status.value)
                return
            await asyncio.sleep(ROWS_EVERY_S)

    return streamed(request, state, visitor.caller.key_id, events)
