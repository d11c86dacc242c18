"""the autoscaler: why an execution could never be placed, instances and their transitions, per-worker credentials
(bootstrap tokens and node credentials), and the autoscaler's last report

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

STATES = (
    "requested",
    "allocated",
    "joined",
    "draining",
    "deleting",
    "deleted",
    "allocation_failed",
    "join_timeout",
)


def upgrade() -> None:
    with op.batch_alter_table("executions") as batch:
        batch.add_column(sa.Column("failure_detail", sa.Text(), nullable=True))
    op.create_table(
        "instances",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("server_id", sa.String(64)),
        sa.Column("server_type", sa.String(64), nullable=False),
        sa.Column("location", sa.String(64), nullable=False),
        sa.Column("price_eur_per_hour", sa.Float(), nullable=False),
        sa.Column("cpus", sa.Float(), nullable=False),
        sa.Column("memory_mb", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(24), nullable=False),
        sa.Column("reason", sa.Text()),
        sa.Column("action_id", sa.String(64)),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state_since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint(
            "state IN (" + ",".join(f"'{s}'" for s in STATES) + ")", name="ck_instances_state"
        ),
    )
    op.create_index("ix_instances_state", "instances", ["state"])
    op.create_table(
        "instance_transitions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "instance", sa.String(63), sa.ForeignKey("instances.name", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("from_state", sa.String(24)),
        sa.Column("to_state", sa.String(24), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
    )
    op.create_index("ix_instance_transitions_instance", "instance_transitions", ["instance"])
    op.create_table(
        "worker_credentials",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("worker_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
        sa.Column("used_at", sa.DateTime(timezone=True)),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("kind IN ('bootstrap','node')", name="ck_worker_credentials_kind"),
    )
    op.create_index("ix_worker_credentials_worker_id", "worker_credentials", ["worker_id"])
    op.create_table(
        "autoscaler_report",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("autoscaler_report")
    op.drop_table("worker_credentials")
    op.drop_table("instance_transitions")
    op.drop_table("instances")
    with op.batch_alter_table("executions") as batch:
        batch.drop_column("failure_detail")
