"""`rgrid db upgrade` brings an empty database to the schema, on SQLite and
PostgreSQL, and is safe to run again."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect
from sqlalchemy.exc import DBAPIError

from rgrid.states import ATTEMPT, EXECUTION
from rgrid.wire import Status
from tests.support.services import Postgres

TABLES = {"alembic_version", "api_keys", "objects", "executions", "attempts", "outputs", "log_chunks"}
# The indexes the hot paths rely on (docs/benchmarks.md: history, queue depth).
INDEXES = {
    "executions": {
        "ix_executions_owner_created",
        "ix_executions_status",
        "ix_executions_status_owner_created",
        "ix_executions_batch_status",
        "ix_executions_owner_cache_key",
        "ix_executions_owner_script_created",
    },
    "attempts": {"ix_attempts_status_lease", "ix_attempts_worker_id"},
}


def upgrade(url: str) -> subprocess.CompletedProcess[str]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RGRID_")}, "RGRID_DATABASE_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "rgrid", "db", "upgrade"], env=env, text=True, capture_output=True, timeout=120
    )


def tables(url: str) -> set[str]:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def indexes(url: str, table: str) -> set[str]:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        return {str(ix["name"]) for ix in inspect(engine).get_indexes(table)}
    finally:
        engine.dispose()


def check(url: str) -> None:
    first = upgrade(url)
    assert first.returncode == 0, first.stderr
    assert "up to date" in first.stdout
    assert tables(url) >= TABLES
    for table, wanted in INDEXES.items():
        assert indexes(url, table) >= wanted, (table, wanted - indexes(url, table))
    assert upgrade(url).returncode == 0


def test_upgrade_sqlite(tmp_path: Path) -> None:
    check(f"sqlite:///{tmp_path / 'fresh.db'}")


def fresh_database(postgres: Postgres, name: str) -> str:
    admin = create_engine(
        postgres.url.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    return postgres.url.rsplit("/", 1)[0] + f"/{name}"


def test_upgrade_postgres(postgres: Postgres) -> None:
    check(fresh_database(postgres, "fresh_upgrade"))


@pytest.mark.parametrize("url", ["sqlite:////nonexistent/dir/x.db"])
def test_upgrade_error_is_reported(url: str) -> None:
    result = upgrade(url)
    assert result.returncode != 0


EXECUTION_ROW = (
    "INSERT INTO executions (id, owner, status, script_name, script_sha256, args, inputs, env,"
    " runtime, cpu, memory_mb, timeout_s, retries, attempt, cancel_requested, created_at,"
    " network, lost_attempts) VALUES ('{id}', 'o', '{status}', 's.py', 'x', '[]', '[]', '{{}}',"
    " 'python:3.11', 1, 64, 60, 0, 0, false, CURRENT_TIMESTAMP, true, 0)"
)
ATTEMPT_ROW = (
    "INSERT INTO attempts (execution_id, number, status, dispatched_at)"
    " VALUES ('host', {number}, '{status}', CURRENT_TIMESTAMP)"
)


def _the_database_allows_exactly_the_tables(url: str) -> None:
    """Whoever writes, the database allows an execution or an attempt
    exactly the moves of its table in rgrid.states, and no other."""
    assert upgrade(url).returncode == 0
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        conn.exec_driver_sql(EXECUTION_ROW.format(id="host", status="running"))
    n = 0
    for moves, table in ((EXECUTION, "executions"), (ATTEMPT, "attempts")):
        allowed = moves.pairs()
        for old, new in itertools.permutations([str(s) for s in Status], 2):
            n += 1
            with engine.begin() as conn:
                if table == "executions":
                    conn.exec_driver_sql(EXECUTION_ROW.format(id=f"t{n}", status=old))
                    where = f"id = 't{n}'"
                else:
                    conn.exec_driver_sql(ATTEMPT_ROW.format(number=n, status=old))
                    where = f"execution_id = 'host' AND number = {n}"
            try:
                with engine.begin() as conn:
                    conn.exec_driver_sql(f"UPDATE {table} SET status = '{new}' WHERE {where}")
                moved = True
            except DBAPIError:
                moved = False
            assert moved == ((old, new) in allowed), f"{table}: {old} -> {new}"
    engine.dispose()


def test_state_tables_enforced_sqlite(tmp_path: Path) -> None:
    _the_database_allows_exactly_the_tables(f"sqlite:///{tmp_path / 'tr.db'}")


def test_state_tables_enforced_postgres(postgres: Postgres) -> None:
    _the_database_allows_exactly_the_tables(fresh_database(postgres, "transitions_check"))
