"""verbose installs: an execution run with `--verbose` shows its installer's
output in its log even when the install works.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN: a batch copy of the table would drop SQLite's
    # transition triggers with it.
    op.add_column("executions", sa.Column("verbose", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    op.drop_column("executions", "verbose")
