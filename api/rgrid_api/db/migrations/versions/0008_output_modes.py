"""output modes: each output keeps the permission bits the job gave it, so
a downloaded script stays executable and a private file stays private
(NULL for outputs recorded before: they download as 0666 under the umask).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("outputs", sa.Column("mode", sa.Integer()))


def downgrade() -> None:
    op.drop_column("outputs", "mode")
