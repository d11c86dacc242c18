"""the Ray head's address, announced by the head node's agent, and the Ray
node each attempt ran on (a restarted node's leftovers are given back)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("ray_address", sa.String(length=256), nullable=True))
    with op.batch_alter_table("attempts") as batch:
        batch.add_column(sa.Column("ray_node_id", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("attempts") as batch:
        batch.drop_column("ray_node_id")
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("ray_address")
