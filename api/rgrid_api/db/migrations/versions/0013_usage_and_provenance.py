"""What each attempt used and ran with; package sets stored once; the
package set an owner's requirements last installed as (the result cache's
key takes it).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

ATTEMPT_COLUMNS: list[sa.Column[Any]] = [
    sa.Column("cpu_seconds", sa.Float(), nullable=True),
    sa.Column("peak_memory_bytes", sa.BigInteger(), nullable=True),
    sa.Column("wall_seconds", sa.Float(), nullable=True),
    sa.Column("output_bytes", sa.BigInteger(), nullable=True),
    sa.Column("interpreter", sa.String(128), nullable=True),
    sa.Column("rgrid_version", sa.String(64), nullable=True),
    sa.Column("lock_sha256", sa.String(64), nullable=True),
]


def upgrade() -> None:
    for column in ATTEMPT_COLUMNS:
        op.add_column("attempts", column)
    op.add_column("executions", sa.Column("lock_sha256", sa.String(64), nullable=True))
    op.create_table(
        "package_locks",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("interpreter", sa.String(128), nullable=False),
        sa.Column("packages", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "current_locks",
        sa.Column("owner", sa.String(128), primary_key=True),
        sa.Column("environment_key", sa.String(64), primary_key=True),
        sa.Column("lock_sha256", sa.String(64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("current_locks")
    op.drop_table("package_locks")
    op.drop_column("executions", "lock_sha256")
    for column in reversed(ATTEMPT_COLUMNS):
        op.drop_column("attempts", column.name)
