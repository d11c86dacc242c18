"""The grid's Ray token in the database once it is rotated, and which token
each node's raylet runs with.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ray_tokens",
        sa.Column("generation", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("token", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("in_force_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.add_column("workers", sa.Column("ray_token_fp", sa.String(16), nullable=True))


def downgrade() -> None:
    op.drop_column("workers", "ray_token_fp")
    op.drop_table("ray_tokens")
