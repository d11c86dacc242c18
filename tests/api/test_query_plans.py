"""The hot lookups read the indexes meant for them, on a real SQLite
database migrated as `rgrid db upgrade` does (the planner has no
statistics: a query shape that lets it pick the wrong index scans an
owner's whole history on every read)."""

from __future__ import annotations

import pytest
from sqlalchemy import Select, inspect, select, text
from sqlalchemy.orm import Session

from rgrid.wire import Status
from rgrid_api.attempts import _QUEUED_OWNERS, still_queued
from rgrid_api.db.models import Attempt, Execution
from rgrid_api.db.times import utcnow
from rgrid_api.executionread import READ
from rgrid_api.ids import ID_LENGTH
from rgrid_api.lookup import prefix_query


def _plan(session: Session, statement: Select) -> str:
    compiled = statement.compile(session.get_bind(), compile_kwargs={"literal_binds": True})
    rows = session.execute(text(f"EXPLAIN QUERY PLAN {compiled}")).all()
    return " | ".join(str(row[-1]) for row in rows)


def test_the_migrations_make_the_open_attempts_index(session: Session) -> None:
    indexes = {ix["name"]: ix["column_names"] for ix in inspect(session.get_bind()).get_indexes("attempts")}
    assert indexes["ix_attempts_status_lease"] == ["status", "lease_expires_at"]


@pytest.mark.parametrize("wanted", ["abcdefgh01", "abcd"])
def test_an_owners_execution_by_id_or_prefix_is_read_by_its_key(session: Session, wanted: str) -> None:
    plan = _plan(session, prefix_query(Execution, "alice", wanted, "", ID_LENGTH, "execution"))
    assert "ix_executions_owner" not in plan
    assert "USING INDEX sqlite_autoindex_executions_1" in plan or "USING PRIMARY KEY" in plan, plan


def test_the_hot_read_of_an_execution_is_by_its_key(session: Session) -> None:
    plan = _plan(session, READ.params(owner="alice", low="abcd", high="abcd~"))
    assert "ix_executions_owner" not in plan and "sqlite_autoindex_executions_1" in plan, plan


def test_the_monitors_pass_reads_only_open_attempts(session: Session) -> None:
    query = select(Attempt.execution_id, Attempt.number).where(
        Attempt.status.in_([Status.DISPATCHED, Status.RUNNING]), Attempt.lease_expires_at < utcnow()
    )
    assert "ix_attempts_status_lease" in _plan(session, query)


def test_a_claim_takes_its_chosen_runs_by_their_key(session: Session) -> None:
    plan = _plan(session, still_queued(["abcdefgh01", "abcdefgh02"]))
    assert "ix_executions_status" not in plan and "sqlite_autoindex_executions_1" in plan, plan


def test_the_owners_with_queued_work_are_found_one_index_probe_each(session: Session) -> None:
    rows = session.execute(text(f"EXPLAIN QUERY PLAN {_QUEUED_OWNERS.text}"), {"queued": "queued"}).all()
    plan = " | ".join(str(row[-1]) for row in rows)
    assert "(status=? AND owner>?)" in plan and "SCAN executions" not in plan, plan
