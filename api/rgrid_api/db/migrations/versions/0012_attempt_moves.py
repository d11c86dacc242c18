"""Attempts move only along their table (`rgrid.states.ATTEMPT`), as
executions already do: until now the database only refused to change an
attempt that had ended.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

FINAL = "('succeeded','failed','cancelled')"
ATTEMPT_EDGES = [
    ("dispatched", "running"),
    ("dispatched", "failed"),
    ("dispatched", "cancelled"),
    ("running", "succeeded"),
    ("running", "failed"),
    ("running", "cancelled"),
]


def _edge_sql() -> str:
    return " OR ".join(f"(OLD.status = '{a}' AND NEW.status = '{b}')" for a, b in ATTEMPT_EDGES)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"""
            CREATE OR REPLACE FUNCTION rgrid_check_attempt_status() RETURNS trigger AS $$
            BEGIN
                IF NEW.status <> OLD.status AND NOT ({_edge_sql()}) THEN
                    RAISE EXCEPTION 'attempt % of % cannot go from % to %',
                        OLD.number, OLD.execution_id, OLD.status, NEW.status;
                END IF;
                RETURN NEW;
            END $$ LANGUAGE plpgsql""")
    else:
        op.execute("DROP TRIGGER attempts_status_final")
        op.execute(f"""
            CREATE TRIGGER attempts_status_moves BEFORE UPDATE OF status ON attempts
            WHEN NEW.status <> OLD.status AND NOT ({_edge_sql()})
            BEGIN SELECT RAISE(ABORT, 'invalid attempt status transition'); END""")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"""
            CREATE OR REPLACE FUNCTION rgrid_check_attempt_status() RETURNS trigger AS $$
            BEGIN
                IF NEW.status <> OLD.status AND OLD.status IN {FINAL} THEN
                    RAISE EXCEPTION 'attempt % of % already ended (%)', OLD.number, OLD.execution_id, OLD.status;
                END IF;
                RETURN NEW;
            END $$ LANGUAGE plpgsql""")
    else:
        op.execute("DROP TRIGGER attempts_status_moves")
        op.execute(f"""
            CREATE TRIGGER attempts_status_final BEFORE UPDATE OF status ON attempts
            WHEN NEW.status <> OLD.status AND OLD.status IN {FINAL}
            BEGIN SELECT RAISE(ABORT, 'attempt already ended'); END""")
