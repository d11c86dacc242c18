"""`rgrid server` and `rgrid db`: registered into the rgrid CLI through the
`rgrid.commands` entry point group, so the client never imports the server.
Heavy imports happen inside the commands to keep `rgrid run` fast."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Annotated

import typer

from rgrid.errors import UsageError

if TYPE_CHECKING:
    from rgrid_api.settings import Settings

server_app = typer.Typer(
    help="Run the API server (dispatcher included).", invoke_without_command=True, no_args_is_help=False
)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)


def _settings() -> Settings:
    from rgrid_api.settings import Settings

    return Settings()


@server_app.callback()
def server(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Bind address (RGRID_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (RGRID_PORT).")] = None,
) -> None:
    """Serve the API; migrates the database first."""
    if ctx.invoked_subcommand is not None:
        return
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


@server_app.command("create-key")
def create_key_cmd(
    owner: Annotated[str, typer.Option(help="Tenant the key acts for.")],
    name: Annotated[str, typer.Option(help="A label for the key.")] = "default",
) -> None:
    """Create an API key for OWNER and print it (it is stored only hashed)."""
    from rgrid_api.auth import create_key
    from rgrid_api.db.engine import make_engine, make_sessionmaker
    from rgrid_api.db.migrate import upgrade

    settings = _settings()
    upgrade(settings.database_url)
    with make_sessionmaker(make_engine(settings.database_url))() as session:
        try:
            typer.echo(create_key(session, owner, name))
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None


@server_app.command("revoke-key")
def revoke_key_cmd(
    owner: Annotated[str, typer.Option(help="Tenant whose keys to revoke.")],
    name: Annotated[str | None, typer.Option(help="Only the keys with this label.")] = None,
) -> None:
    """Revoke OWNER's API keys (or only those called NAME). Servers stop
    accepting them within RGRID_KEY_CACHE_S seconds."""
    from rgrid_api.auth import revoke_keys
    from rgrid_api.db.engine import make_engine, make_sessionmaker
    from rgrid_api.db.migrate import upgrade

    settings = _settings()
    upgrade(settings.database_url)
    with make_sessionmaker(make_engine(settings.database_url))() as session:
        count = revoke_keys(session, owner, name)
    typer.echo(f"revoked {count} key{'s' if count != 1 else ''}")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration to RGRID_DATABASE_URL."""
    from rgrid_api.db.migrate import upgrade

    upgrade(_settings().database_url)
    typer.echo("database is up to date")
