"""open attempts' leases: the monitor reads them every second, and without
an index on the attempt's state it scanned every attempt ever made (14 ms at
100,000 executions).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_attempts_status_lease", "attempts", ["status", "lease_expires_at"])


def downgrade() -> None:
    op.drop_index("ix_attempts_status_lease", table_name="attempts")
