"""The result cache: `--cache` reuses a succeeded execution instead of
running the same thing again.

Every execution gets a content key: the sha256 of its script, every input's
content and place in the work dir, its arguments, runtime, requirements,
`--env` values and the exact package set its requirements install as
(`rgrid_api.provenance`): at submission the set they last installed as for
this owner, and once it ran, the set it ran with. So a result made with
other packages than the requirements now install is not reused. With `cache`, a new execution whose key matches a succeeded
execution of the same owner is created already succeeded: its log chunks
and outputs (the same stored objects) are copied from that execution, and
`cached_from` names it. Nothing runs, and the CLI replays it exactly as if
it had just run. Never across owners.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

from sqlalchemy import String, column, insert, select, values
from sqlalchemy.orm import Session

from rgrid.wire import ExecutionCreate, Status
from rgrid_api.db.models import Execution, LogChunkRow, Output

LOOKUP_CHUNK = 1000


def content_key(spec: ExecutionCreate, runtime: str, lock_sha256: str | None) -> str:
    described = {
        "packages": lock_sha256 or "",
        "script": [spec.script.path, spec.script.sha256],
        "inputs": sorted([f.path, f.sha256] for f in spec.inputs),
        "args": spec.args,
        "runtime": runtime,
        "requirements": spec.requirements or "",
        "env": sorted(spec.env.items()),
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


def previous_results(session: Session, owner: str, keys: set[str]) -> dict[str, Execution]:
    """The latest succeeded execution of this owner for each key."""
    found: dict[str, Execution] = {}
    wanted = sorted(keys)
    for start in range(0, len(wanted), LOOKUP_CHUNK):
        rows = session.scalars(
            select(Execution)
            .where(
                Execution.owner == owner,
                Execution.cache_key.in_(wanted[start : start + LOOKUP_CHUNK]),
                Execution.status == Status.SUCCEEDED,
            )
            .order_by(Execution.finished_at)
        )
        for row in rows:
            found[str(row.cache_key)] = row  # the latest wins
    return found


def reuse(rows: list[Execution], previous: dict[str, Execution]) -> list[tuple[Execution, Execution]]:
    """Mark each row with a previous result as that result (not yet flushed);
    returns (row, source) pairs whose logs and outputs are to be copied."""
    now = datetime.now(UTC)
    pairs = []
    for row in rows:
        source = previous.get(row.cache_key or "")
        if source is None:
            continue
        # A new row, not yet written: it is born succeeded (no move).
        row.status = Status.SUCCEEDED
        row.exit_code = 0
        row.duration_s = source.duration_s
        row.started_at = row.finished_at = now
        row.cached_from = source.cached_from or source.id
        row.lock_sha256 = source.lock_sha256
        pairs.append((row, source))
    return pairs


def copy_results(session: Session, pairs: list[tuple[Execution, Execution]]) -> None:
    """Log chunks and outputs of each source, as the row's own (after a
    flush). The database copies them (INSERT ... SELECT joined to a
    source -> row mapping): a batch of cached results costs a few
    statements, and no log passes through this process."""
    links = [(source.id, row.id) for row, source in pairs]
    for start in range(0, len(links), LOOKUP_CHUNK):
        mapping = (
            values(column("source", String), column("target", String), name="cache_map")
            .data(links[start : start + LOOKUP_CHUNK])
            .cte("cache_map")
        )
        for table, columns in (
            (LogChunkRow, ("seq", "attempt", "stream", "data", "created_at")),
            (Output, ("attempt", "path", "size", "sha256", "object_key", "mode")),
        ):
            copied = select(mapping.c.target, *(getattr(table, c) for c in columns)).join(
                mapping, mapping.c.source == table.execution_id
            )
            session.execute(insert(table).from_select(["execution_id", *columns], copied))
