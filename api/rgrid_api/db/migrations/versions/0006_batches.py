"""batches: one script over many inputs, with a parallelism cap the
dispatcher keeps; and the result cache: each execution's content key, and
the execution a cached one reused

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batches",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("script_name", sa.String(1024), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("parallel", sa.Integer()),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_batches_owner_created", "batches", ["owner", "created_at"])
    # Plain ADD COLUMN, never a batch copy: on SQLite that would recreate the
    # table and lose its state triggers (0003). SQLite takes the foreign key
    # inline; alembic only writes it as a separate constraint.
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "ALTER TABLE executions ADD COLUMN batch_id VARCHAR(16) "
            "CONSTRAINT fk_executions_batch REFERENCES batches (id)"
        )
    else:
        op.add_column("executions", sa.Column("batch_id", sa.String(16)))
        op.create_foreign_key("fk_executions_batch", "executions", "batches", ["batch_id"], ["id"])
    op.add_column("executions", sa.Column("batch_input", sa.String(1024)))
    op.create_index("ix_executions_batch_status", "executions", ["batch_id", "status"])
    op.add_column("executions", sa.Column("cache_key", sa.String(64)))
    op.add_column("executions", sa.Column("cached_from", sa.String(16)))
    op.create_index("ix_executions_owner_cache_key", "executions", ["owner", "cache_key"])


def downgrade() -> None:
    op.drop_index("ix_executions_owner_cache_key", table_name="executions")
    op.drop_column("executions", "cached_from")
    op.drop_column("executions", "cache_key")
    op.drop_index("ix_executions_batch_status", table_name="executions")
    op.drop_column("executions", "batch_input")
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint("fk_executions_batch", "executions", type_="foreignkey")
    op.drop_column("executions", "batch_id")
    op.drop_index("ix_batches_owner_created", table_name="batches")
    op.drop_table("batches")
