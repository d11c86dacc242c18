"""One rule for who commits (`rgrid_api/__init__.py`): a function handed a
session never commits nor rolls back it, unless it is a route; routes
(handed their session by the request), and loops and commands (which open
theirs from a sessionmaker), own the transaction. Read from the source, so
a new helper that commits on its caller's behalf fails here, by name."""

from __future__ import annotations

import ast
from pathlib import Path

import rgrid_api

PACKAGE = Path(rgrid_api.__file__).parent
# Route modules: a route is handed its session and owns its transaction
# (their small helpers, such as routes/workers.py `_ack`, end a route's read).
ROUTES = ("routes/", "console/actions.py")


def _session_params(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    args = fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs
    return {
        a.arg
        for a in args
        if a.arg == "session" or (a.annotation is not None and "Session" in ast.unparse(a.annotation))
    }


def ended_by_helpers(source: str) -> list[str]:
    """`function: session.commit` for each function that ends the
    transaction of a session it was handed."""
    found = []
    for fn in ast.walk(ast.parse(source)):
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        params = _session_params(fn)
        for node in ast.walk(fn):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("commit", "rollback")
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id in params
            ):
                found.append(f"{fn.name}: {node.func.value.id}.{node.func.attr}")
    return found


def test_no_helper_ends_its_callers_transaction() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith(ROUTES) or "/migrations/" in f"/{relative}":
            continue
        offenders += [f"{relative} {hit}" for hit in ended_by_helpers(path.read_text())]
    assert offenders == []


def test_the_rule_is_seen_where_it_is_broken() -> None:
    """The reader finds a commit on a handed session, and only there."""
    source = """
def helper(session: Session) -> None:
    session.commit()

def undo(db, *, session) -> None:
    session.rollback()

def loop(sessions) -> None:
    with sessions() as session:
        session.commit()
"""
    assert ended_by_helpers(source) == ["helper: session.commit", "undo: session.rollback"]
