"""workers, heartbeats, attempt placement, infrastructure losses, and state
transitions enforced by the database

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

FINAL = "('succeeded','failed','cancelled')"
# Allowed (old, new) status pairs for executions; attempts never leave a final state.
EXECUTION_EDGES = [
    ("queued", "dispatched"),
    ("queued", "cancelled"),
    ("queued", "failed"),
    ("dispatched", "running"),
    ("dispatched", "queued"),
    ("dispatched", "failed"),
    ("dispatched", "cancelled"),
    ("running", "succeeded"),
    ("running", "failed"),
    ("running", "cancelled"),
    ("running", "queued"),
]


def _edge_sql(old: str, new: str) -> str:
    return " OR ".join(f"({old}.status = '{a}' AND {new}.status = '{b}')" for a, b in EXECUTION_EDGES)


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("host_name", sa.String(256), nullable=False),
        sa.Column("ray_node_id", sa.String(64)),
        sa.Column("resources", sa.JSON(), nullable=False),
        sa.Column("runtimes", sa.JSON(), nullable=False),
        sa.Column("sandbox", sa.String(32), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("server_id", sa.String(64)),
        sa.Column("pid", sa.Integer()),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("status IN ('active','draining','dead','left')", name="ck_workers_status"),
    )
    op.create_table(
        "worker_heartbeats",
        sa.Column(
            "worker_id", sa.String(64), sa.ForeignKey("workers.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("last_heartbeat_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_worker_heartbeats_last_heartbeat_at", "worker_heartbeats", ["last_heartbeat_at"])
    with op.batch_alter_table("attempts") as batch:
        batch.add_column(sa.Column("worker_id", sa.String(64), nullable=True))
        batch.create_foreign_key("fk_attempts_worker", "workers", ["worker_id"], ["id"])
        batch.create_index("ix_attempts_worker_id", ["worker_id"])
    with op.batch_alter_table("executions") as batch:
        batch.add_column(sa.Column("lost_attempts", sa.Integer(), nullable=False, server_default="0"))

    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"""
            CREATE FUNCTION rgrid_check_execution_status() RETURNS trigger AS $$
            BEGIN
                IF NEW.status <> OLD.status AND NOT ({_edge_sql("OLD", "NEW")}) THEN
                    RAISE EXCEPTION 'execution % cannot go from % to %', OLD.id, OLD.status, NEW.status;
                END IF;
                RETURN NEW;
            END $$ LANGUAGE plpgsql""")
        op.execute("""CREATE TRIGGER executions_status_transition BEFORE UPDATE OF status ON executions
                      FOR EACH ROW EXECUTE FUNCTION rgrid_check_execution_status()""")
        op.execute(f"""
            CREATE FUNCTION rgrid_check_attempt_status() RETURNS trigger AS $$
            BEGIN
                IF NEW.status <> OLD.status AND OLD.status IN {FINAL} THEN
                    RAISE EXCEPTION 'attempt % of % already ended (%)', OLD.number, OLD.execution_id, OLD.status;
                END IF;
                RETURN NEW;
            END $$ LANGUAGE plpgsql""")
        op.execute("""CREATE TRIGGER attempts_status_final BEFORE UPDATE OF status ON attempts
                      FOR EACH ROW EXECUTE FUNCTION rgrid_check_attempt_status()""")
    else:
        op.execute(f"""
            CREATE TRIGGER executions_status_transition BEFORE UPDATE OF status ON executions
            WHEN NEW.status <> OLD.status AND NOT ({_edge_sql("OLD", "NEW")})
            BEGIN SELECT RAISE(ABORT, 'invalid execution status transition'); END""")
        op.execute(f"""
            CREATE TRIGGER attempts_status_final BEFORE UPDATE OF status ON attempts
            WHEN NEW.status <> OLD.status AND OLD.status IN {FINAL}
            BEGIN SELECT RAISE(ABORT, 'attempt already ended'); END""")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER executions_status_transition ON executions")
        op.execute("DROP FUNCTION rgrid_check_execution_status()")
        op.execute("DROP TRIGGER attempts_status_final ON attempts")
        op.execute("DROP FUNCTION rgrid_check_attempt_status()")
    else:
        op.execute("DROP TRIGGER executions_status_transition")
        op.execute("DROP TRIGGER attempts_status_final")
    with op.batch_alter_table("executions") as batch:
        batch.drop_column("lost_attempts")
    with op.batch_alter_table("attempts") as batch:
        batch.drop_index("ix_attempts_worker_id")
        batch.drop_constraint("fk_attempts_worker", type_="foreignkey")
        batch.drop_column("worker_id")
    op.drop_index("ix_worker_heartbeats_last_heartbeat_at", "worker_heartbeats")
    op.drop_table("worker_heartbeats")
    op.drop_table("workers")
