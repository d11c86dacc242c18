"""requirements text and network switch per execution

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("executions") as batch:
        batch.add_column(sa.Column("requirements", sa.Text(), nullable=True))
        batch.add_column(sa.Column("network", sa.Boolean(), nullable=False, server_default=sa.true()))


def downgrade() -> None:
    with op.batch_alter_table("executions") as batch:
        batch.drop_column("network")
        batch.drop_column("requirements")
