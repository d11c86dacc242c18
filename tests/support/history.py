"""Rows of a history written straight into a database, as the API would
have written them: what the benches over database sizes and the tests of
long lists fill a database with."""

from __future__ import annotations

from datetime import datetime

from rgrid.wire import Status


def execution_row(
    execution_id: str, owner: str, status: Status, created: datetime, **more: object
) -> dict[str, object]:
    """An executions row as the API writes one (a 1-CPU `job.py`), with `more` columns."""
    return {
        "id": execution_id,
        "owner": owner,
        "status": status,
        "script_name": "job.py",
        "script_sha256": "0" * 64,
        "args": [],
        "inputs": [],
        "env": {},
        "runtime": "python:3.11",
        "cpu": 1.0,
        "memory_mb": 256,
        "timeout_s": 60.0,
        "retries": 0,
        "attempt": 0 if status == Status.QUEUED else 1,
        "created_at": created,
        **more,
    }
