"""`rgrid db upgrade` brings an empty database to the schema, on SQLite and
PostgreSQL, and is safe to run again."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect

from tests.support.services import Postgres

TABLES = {"alembic_version", "api_keys", "objects", "executions", "attempts", "outputs", "log_chunks"}


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


def check(url: str) -> None:
    first = upgrade(url)
    assert first.returncode == 0, first.stderr
    assert "up to date" in first.stdout
    assert tables(url) >= TABLES
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


def _transitions_refused(url: str) -> None:
    """The database itself refuses leaving a final state, whoever writes."""
    assert upgrade(url).returncode == 0
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO executions (id, owner, status, script_name, script_sha256, args, inputs, env,"
            " runtime, cpu, memory_mb, timeout_s, retries, attempt, cancel_requested, created_at,"
            " network, lost_attempts) VALUES ('t1', 'o', 'queued', 's.py', 'x', '[]', '[]', '{}',"
            " 'python:3.11', 1, 64, 60, 0, 0, false, CURRENT_TIMESTAMP, true, 0)"
        )
        conn.exec_driver_sql("UPDATE executions SET status = 'cancelled' WHERE id = 't1'")
    for illegal in ("queued", "running", "succeeded"):
        with pytest.raises(Exception, match=r"transition|cannot go"), engine.begin() as conn:
            conn.exec_driver_sql(f"UPDATE executions SET status = '{illegal}' WHERE id = 't1'")
    engine.dispose()


def test_transitions_enforced_sqlite(tmp_path: Path) -> None:
    _transitions_refused(f"sqlite:///{tmp_path / 'tr.db'}")


def test_transitions_enforced_postgres(postgres: Postgres) -> None:
    _transitions_refused(fresh_database(postgres, "transitions_check"))
