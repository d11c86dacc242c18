"""The read behind `GET /v1/executions/{id}`.

Every follower and every `rgrid status` polls it, so it is the API's
hottest read. It is two indexed SELECTs through SQLAlchemy Core: the ORM's
identity map and loaders cost three quarters of the read when it went
through a session. A final execution's answer is kept by
`rgrid_api.finalviews` after its first read; this module reads the others.
"""

from __future__ import annotations

from sqlalchemy import Connection, select

from rgrid.wire import ExecutionView
from rgrid_api.costs import execution_cost
from rgrid_api.db.models import Attempt, Execution
from rgrid_api.ids import ID_LENGTH
from rgrid_api.lookup import id_matches, only_match
from rgrid_api.views import execution_view

EXECUTIONS = Execution.__table__
ATTEMPTS = Attempt.__table__


def read_execution(conn: Connection, owner: str, id_or_prefix: str) -> ExecutionView:
    """The owner's execution by id or unique prefix, with its attempts and,
    once final, its cost."""
    matching = id_matches(EXECUTIONS.c.id, id_or_prefix, "", ID_LENGTH, "execution")
    found = conn.execute(select(EXECUTIONS).where(EXECUTIONS.c.owner == owner, matching).limit(2)).all()
    execution = only_match(found, id_or_prefix, "execution")
    attempts = conn.execute(
        select(ATTEMPTS).where(ATTEMPTS.c.execution_id == execution.id).order_by(ATTEMPTS.c.number)
    ).all()
    view = execution_view(execution, attempts)
    view.cost_eur = execution_cost(conn, execution, attempts)
    return view
