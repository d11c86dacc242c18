"""open attempts' leases: the monitor reads them every second, and without
an index on the attempt's state it scanned every attempt ever made (14 ms at
100,000 executions). And at most one node credential that works per worker
id: two nodes joining with one id at once cannot both get one.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


LIVE_NODE = sa.text("kind = 'node' AND revoked_at IS NULL")


def upgrade() -> None:
    # An operator may have built it beforehand, CONCURRENTLY (docs/operations.md).
    op.create_index(
        "ix_attempts_status_lease", "attempts", ["status", "lease_expires_at"], if_not_exists=True
    )
    op.create_index(
        "ux_worker_credentials_live_node",
        "worker_credentials",
        ["worker_id"],
        unique=True,
        sqlite_where=LIVE_NODE,
        postgresql_where=LIVE_NODE,
    )


def downgrade() -> None:
    op.drop_index("ux_worker_credentials_live_node", table_name="worker_credentials")
    op.drop_index("ix_attempts_status_lease", table_name="attempts")
