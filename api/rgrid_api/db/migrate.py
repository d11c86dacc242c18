"""Apply the Alembic chain in migrations/ to a database URL."""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.config import Config

_REPO_MIGRATIONS = Path(__file__).resolve().parents[3] / "migrations"


def migrations_dir() -> Path:
    """The migrations folder: RGRID_MIGRATIONS_DIR, else the one beside the code."""
    return Path(os.environ.get("RGRID_MIGRATIONS_DIR", _REPO_MIGRATIONS))


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str) -> None:
    """Bring the schema to the newest revision; safe to call on every start."""
    command.upgrade(alembic_config(url), "head")
