"""Alembic environment: one linear chain of revisions for SQLite and Postgres.

The database URL comes from the Config object built by rgrid_api.db.migrate,
never from a file, so the server and `rgrid db upgrade` agree on it.
"""

from __future__ import annotations

from alembic import context

from rgrid_api.db.engine import make_engine
from rgrid_api.db.models import Base

config = context.config


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database URL: run migrations through rgrid_api.db.migrate")
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    context.configure(
        url=config.get_main_option("sqlalchemy.url"), target_metadata=Base.metadata, literal_binds=True
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
