"""`rgrid server` and `rgrid db`: registered into the rgrid CLI through the
`rgrid.commands` entry point group, so the client never imports the server.
Heavy imports happen inside the commands to keep `rgrid run` fast."""

from __future__ import annotations

import logging
import os
import re
import time
from typing import TYPE_CHECKING

from rgrid.cli.console import out
from rgrid.cli.parser import Commands, Parser, positive_float, positive_int
from rgrid.errors import UsageError

if TYPE_CHECKING:
    from sqlalchemy.orm import sessionmaker

    from rgrid_api.settings import Settings


def _settings() -> Settings:
    from rgrid_api.settings import Settings

    return Settings()


def server(host: str | None, port: int | None) -> None:
    """Serve the API; migrates the database first."""
    # Before Ray is imported: never let Ray ship this process's working
    # directory to workers (its `uv run` hook would), whoever started us.
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    import uvicorn

    from rgrid_api.app import create_app

    settings = _settings()
    bind = host or settings.host
    if defaults := settings.default_secrets_in_use(bind):
        raise UsageError(
            f"refusing to serve on {bind} with the built-in {' and '.join(defaults)}: "
            "set each to a long random value (only loopback may use the defaults)"
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    uvicorn.run(app, host=bind, port=port or settings.port, log_level="warning", access_log=False)


def create_key_cmd(
    owner: str, name: str, admin: bool, max_running_cpus: float | None, max_queued: int | None
) -> None:
    """Create an API key for OWNER and print it (it is stored only hashed).
    A user key sees its owner's runs and the grid's capacity; an admin key
    also sees the nodes, the autoscaler and everyone's cost, and may cancel
    and drain anything. Caps given here are the key's own (an owner's cap
    is the largest its keys set; RGRID_MAX_* where none does)."""
    from rgrid.wire import Role
    from rgrid_api.auth import Caps, create_key
    from rgrid_api.db.engine import make_engine, make_sessionmaker
    from rgrid_api.db.migrate import upgrade

    settings = _settings()
    upgrade(settings.database_url)
    role = Role.ADMIN if admin else Role.USER
    with make_sessionmaker(make_engine(settings.database_url))() as session:
        try:
            key = create_key(session, owner, name, role=role, caps=Caps(max_running_cpus, max_queued))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        session.commit()
    out.print(key, markup=False, highlight=False)


def set_caps_cmd(
    owner: str, name: str | None, max_running_cpus: float | None, max_queued: int | None
) -> None:
    """Set the caps of OWNER's keys (or only those called NAME); a cap left
    out goes back to the server's default. Dispatch rounds and submissions
    apply it at once."""
    from rgrid_api.auth import Caps, set_caps
    from rgrid_api.db.engine import make_engine, make_sessionmaker
    from rgrid_api.db.migrate import upgrade

    settings = _settings()
    upgrade(settings.database_url)
    with make_sessionmaker(make_engine(settings.database_url))() as session:
        count = set_caps(session, owner, Caps(max_running_cpus, max_queued), name)
        session.commit()
    if count == 0:
        raise UsageError(f"{owner} has no key in force" + (f" called {name}" if name else ""))
    out.print(f"caps set on {count} key{'s' if count != 1 else ''}")


def revoke_key_cmd(owner: str, name: str | None) -> None:
    """Revoke OWNER's API keys (or only those called NAME). Servers stop
    accepting them within RGRID_KEY_CACHE_S seconds."""
    from rgrid_api.auth import revoke_keys
    from rgrid_api.db.engine import make_engine, make_sessionmaker
    from rgrid_api.db.migrate import upgrade

    settings = _settings()
    upgrade(settings.database_url)
    with make_sessionmaker(make_engine(settings.database_url))() as session:
        count = revoke_keys(session, owner, name)
        session.commit()
    out.print(f"revoked {count} key{'s' if count != 1 else ''}")


def forget_node_cmd(worker_id: str) -> None:
    """Revoke every credential of WORKER_ID, so that a node that lost its
    kept credential (a new disk, a rebuilt container) may join with the
    worker token under that id again. A node still using one stops being
    heard within RGRID_KEY_CACHE_S seconds."""
    from rgrid_api.credentials import revoke
    from rgrid_api.db.engine import make_engine, make_sessionmaker
    from rgrid_api.db.migrate import upgrade

    settings = _settings()
    upgrade(settings.database_url)
    with make_sessionmaker(make_engine(settings.database_url))() as session:
        count = revoke(session, worker_id)
        session.commit()
    out.print(f"revoked {count} credential{'s' if count != 1 else ''} of {worker_id}; it may join again")


ROTATION_POLL_S = 1.0


def rotate_ray_token_cmd(abandon: bool, detach: bool) -> int:
    """Roll a new Ray token to every live node without cutting running
    work. Nothing new starts until the attempts running now end (queued
    runs wait); then each node, and the server's Ray driver, restarts Ray
    with the new token. A node whose credential was revoked (deleted, or
    forgotten) never gets it. Waits until every live node runs with it;
    Ctrl+C leaves the rotation going."""
    from sqlalchemy.exc import IntegrityError

    from rgrid_api import raytoken
    from rgrid_api.db.engine import make_engine, make_sessionmaker
    from rgrid_api.db.migrate import upgrade

    settings = _settings()
    upgrade(settings.database_url)
    sessions = make_sessionmaker(make_engine(settings.database_url))
    with sessions() as session:
        if abandon:
            dropped = raytoken.abandon(session)
            session.commit()
            out.print(
                "dropped the waiting Ray token: the grid stays on its token"
                if dropped
                else "no rotation waits"
            )
            return 0
        try:
            generation = raytoken.rotate(session)
            session.commit()
        except IntegrityError:
            raise UsageError(
                "another rotation was started at the same moment: it goes on (see `rgrid workers`)"
            ) from None
    out.print(f"new Ray token (generation {generation}): nothing new starts until running work ends")
    if detach:
        out.print(
            "follow it with `rgrid workers`; drop it while it waits: rgrid server rotate-ray-token --abandon"
        )
        return 0
    try:
        _follow_rotation(sessions)
    except KeyboardInterrupt:
        out.print(
            "stopped following; the rotation goes on (rgrid server rotate-ray-token --abandon drops it while it waits)"
        )
        return 130
    return 0


def _follow_rotation(sessions: sessionmaker) -> None:
    """Say each new stage until every live node runs with the new token.
    It also puts the token in force itself once no attempt is open, as the
    active server's monitor would."""
    from rgrid_api import raytoken

    said = ""
    while True:
        with sessions() as session:
            if raytoken.advance(session):
                session.commit()
            p = raytoken.progress(session)
            session.rollback()
        if p.pending:
            line = (
                f"waiting for {p.open_attempts} running attempt{'s' if p.open_attempts != 1 else ''} to end"
            )
        else:
            line = f"in force: {p.switched} of {p.nodes} live node{'s' if p.nodes != 1 else ''} restarted Ray with it"
        if line != said:
            out.print(line)
            said = line
        if not p.pending and p.switched == p.nodes:
            out.print("done: every live node runs with the new token")
            return
        time.sleep(ROTATION_POLL_S)


def bootstrap_token_cmd(worker_id: str, ttl: float) -> None:
    """Print a single-use bootstrap token for a node you set up by hand, so
    that no shared secret sits on it: its agent spends the token once
    (RGRID_BOOTSTRAP_TOKEN, with RGRID_CREDENTIAL_FILE) for a credential of
    its own bound to WORKER_ID, and for the grid's Ray token. Unused, it
    expires after --ttl seconds."""
    from rgrid.wire import WORKER_ID_PATTERN
    from rgrid_api.credentials import issue_bootstrap
    from rgrid_api.db.engine import make_engine, make_sessionmaker
    from rgrid_api.db.migrate import upgrade

    if not re.match(WORKER_ID_PATTERN, worker_id):
        raise UsageError(f"invalid worker id {worker_id!r}: letters, digits, dot, dash and underscore")
    settings = _settings()
    upgrade(settings.database_url)
    with make_sessionmaker(make_engine(settings.database_url))() as session:
        token = issue_bootstrap(session, worker_id, ttl)
        session.commit()
    out.print(token, markup=False, highlight=False)


def db_upgrade() -> None:
    """Apply every pending migration to RGRID_DATABASE_URL."""
    from rgrid_api.db.migrate import upgrade

    upgrade(_settings().database_url)
    out.print("database is up to date")


def _cap_options(parser: Parser) -> None:
    parser.add_argument(
        "--max-running-cpus",
        type=positive_float,
        metavar="CPUS",
        help="CPUs the owner may run at once (else RGRID_MAX_RUNNING_CPUS: no cap by default).",
    )
    parser.add_argument(
        "--max-queued",
        type=positive_int,
        metavar="N",
        help="Executions the owner may have queued (else RGRID_MAX_QUEUED).",
    )


def add_server_commands(commands: Commands) -> None:
    serve = commands.group("server", "Run the API server (dispatcher included).", default=server)
    serve.parser.add_argument("--host", help="Bind address (RGRID_HOST).")
    serve.parser.add_argument("--port", type=int, help="Port (RGRID_PORT).")
    create = serve.add("create-key", create_key_cmd)
    create.add_argument("--owner", required=True, help="Tenant the key acts for.")
    create.add_argument("--name", default="default", help="A label for the key.")
    create.add_argument("--admin", action="store_true", help="An admin key (default: a user key).")
    _cap_options(create)
    caps = serve.add("set-caps", set_caps_cmd)
    caps.add_argument("--owner", required=True, help="Tenant whose keys get the caps.")
    caps.add_argument("--name", help="Only the keys with this label.")
    _cap_options(caps)
    revoke = serve.add("revoke-key", revoke_key_cmd)
    revoke.add_argument("--owner", required=True, help="Tenant whose keys to revoke.")
    revoke.add_argument("--name", help="Only the keys with this label.")
    forget = serve.add("forget-node", forget_node_cmd)
    forget.add_argument("worker_id", metavar="WORKER_ID", help="The node's worker id.")
    boot = serve.add("bootstrap-token", bootstrap_token_cmd)
    boot.add_argument("worker_id", metavar="WORKER_ID", help="The id the node will have.")
    boot.add_argument(
        "--ttl", type=positive_float, default=3600.0, metavar="SECONDS", help="How long it may wait unused."
    )
    rotate = serve.add("rotate-ray-token", rotate_ray_token_cmd)
    rotate.add_argument("--detach", "-d", action="store_true", help="Start it and return at once.")
    rotate.add_argument(
        "--abandon", action="store_true", help="Drop a rotation still waiting for running work."
    )


def add_db_commands(commands: Commands) -> None:
    commands.group("db", "Database maintenance.").add("upgrade", db_upgrade)
