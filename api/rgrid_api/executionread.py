"""The read behind `GET /v1/executions/{id}`.

Every follower and every `rgrid status` polls it, so it is the API's
hottest read. It is one statement through SQLAlchemy Core, built once: the
execution (by id or unique prefix, LIMIT 2 to tell a clash) joined to its
attempts. The ORM's identity map and loaders cost three quarters of the
read when it went through a session, and one statement is one snapshot on
PostgreSQL in autocommit (`make_hot_reader`). A final execution's answer
is kept by `rgrid_api.finalviews` after its first read; this module reads
the others.
"""

from __future__ import annotations

from sqlalchemy import Connection, bindparam, select

from rgrid.wire import ExecutionView
from rgrid_api.costs import execution_cost
from rgrid_api.db.models import Attempt, Execution
from rgrid_api.ids import ID_LENGTH
from rgrid_api.lookup import id_range, only_match
from rgrid_api.provenance import provenance
from rgrid_api.views import AttemptColumns, execution_view

EXECUTIONS = Execution.__table__
ATTEMPTS = Attempt.__table__

# The owner as an expression: SQLite then reads the key's range, not the
# owner's whole history through its index (`lookup.prefix_query`).
_chosen = (
    select(EXECUTIONS)
    .where(
        EXECUTIONS.c.owner.concat("") == bindparam("owner"),
        EXECUTIONS.c.id.between(bindparam("low"), bindparam("high")),
    )
    .limit(2)
    .subquery("chosen")
)
_ATTEMPT_COLUMNS = [ATTEMPTS.c[name].label(f"attempt_{name}") for name in AttemptColumns._fields]
READ = (
    select(_chosen, *_ATTEMPT_COLUMNS)
    .outerjoin(ATTEMPTS, ATTEMPTS.c.execution_id == _chosen.c.id)
    .order_by(_chosen.c.id, ATTEMPTS.c.number)
)


def read_execution(
    conn: Connection, owner: str, id_or_prefix: str, with_provenance: bool = False
) -> ExecutionView:
    """The owner's execution by id or unique prefix, with its attempts,
    once final its cost, and if asked its provenance."""
    low, high = id_range(id_or_prefix, "", ID_LENGTH, "execution")
    rows = conn.execute(READ, {"owner": owner, "low": low, "high": high}).all()
    execution = only_match(list({row.id: row for row in rows}.values()), id_or_prefix, "execution")
    width = len(_ATTEMPT_COLUMNS)
    attempts = [AttemptColumns(*row[-width:]) for row in rows if row.attempt_number is not None]
    view = execution_view(execution, attempts)
    view.cost_eur = execution_cost(conn, execution, attempts)
    if with_provenance:
        view.provenance = provenance(conn, execution, attempts)
    return view
