"""Apply the Alembic chain to a database URL.

The chain ships inside the package (`rgrid_api/db/migrations`), so an
installed wheel migrates its database exactly as this checkout does.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str) -> None:
    """Bring the schema to the newest revision; safe to call on every start."""
    command.upgrade(alembic_config(url), "head")
