"""A run's log as the console shows it: the last lines on the page (a
long log stays usable), the whole of it as a download.

Chunks are read from the newest back until enough lines are in hand, so
the page costs the same for a log of a hundred lines or of millions; the
download (`live.run_log`) streams the chunks a page at a time.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from rgrid.wire import LogChunk
from rgrid_api.db.models import LogChunkRow
from rgrid_api.executions import log_chunk, read_logs

TAIL_LINES = 1000
DOWNLOAD_PAGE = 1000


def tail(session: Session, execution_id: str, lines: int = TAIL_LINES) -> tuple[list[LogChunk], bool]:
    """The chunks holding the last `lines` lines (the first one cut to
    fit), oldest first; and whether anything before them was left out."""
    picked: list[LogChunk] = []
    count = 0
    rows = session.scalars(
        select(LogChunkRow)
        .where(LogChunkRow.execution_id == execution_id)
        .order_by(LogChunkRow.seq.desc())
        .limit(lines)
    )
    for row in rows:
        chunk = log_chunk(row)
        count += chunk.data.count("\n") + (0 if chunk.data.endswith("\n") else 1)
        picked.append(chunk)
        if count >= lines:
            break
    picked.reverse()
    if not picked:
        return [], False
    left_out = count > lines or picked[0].seq > 1  # chunks are numbered from 1
    if count > lines:
        keep = picked[0].data.splitlines(keepends=True)[count - lines :]
        picked[0] = picked[0].model_copy(update={"data": "".join(keep)})
    return picked, left_out


def log_text_page(sessions: sessionmaker[Session], execution_id: str, after: int) -> tuple[str, int]:
    """The text of the chunks after `after`, a page of them, read in a short
    session; and the seq to read on from ("" once nothing is left)."""
    with sessions() as session:
        chunks = read_logs(session, execution_id, after, limit=DOWNLOAD_PAGE)
    return "".join(c.data for c in chunks), chunks[-1].seq if chunks else after
