"""roles and sharing: each API key has a role (user or admin) and may carry
its own caps (running CPUs, queued executions; NULL takes the server's
default); the server makes its own bootstrap key admin at start. A worker
registered by the head's token is the head, for good (`is_head`). The
queue is read per owner, oldest first, so it has an index in that order.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("role", sa.String(16), nullable=False, server_default="user"))
    op.add_column("api_keys", sa.Column("max_running_cpus", sa.Float()))
    op.add_column("api_keys", sa.Column("max_queued", sa.Integer()))
    op.create_index("ix_executions_status_owner_created", "executions", ["status", "owner", "created_at"])
    op.add_column("workers", sa.Column("is_head", sa.Boolean(), nullable=False, server_default=sa.false()))
    # A head registered before this revision is the one with an address.
    op.execute("UPDATE workers SET is_head = true WHERE ray_address IS NOT NULL")


def downgrade() -> None:
    op.drop_column("workers", "is_head")
    op.drop_index("ix_executions_status_owner_created", table_name="executions")
    op.drop_column("api_keys", "max_queued")
    op.drop_column("api_keys", "max_running_cpus")
    op.drop_column("api_keys", "role")
