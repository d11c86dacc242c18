"""What RGRID_HOME/local/state.json holds: the grid's wanted shape (worker
nodes, database, autoscaling, settings) as `rgrid local up` last asked,
and what the supervisor runs (each piece's process, ports and restarts).

The CLI and the supervisor both write it, one at a time under the grid's
file lock (`LocalGrid.locked`). A field that a newer rgrid added and an
older one does not know is ignored, not lost on the next save: extra keys
are kept.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Record(BaseModel):
    # Built on first use: `rgrid run` imports this on its way.
    model_config = ConfigDict(defer_build=True, extra="allow", validate_assignment=True)


class Piece(_Record):
    """One process session the supervisor started: the S3 server, the API,
    the Ray head or a worker node. `pid` is None while it waits to be
    started again after a crash."""

    pid: int | None = None
    ports: dict[str, int] = Field(default_factory=dict)
    started_at: float | None = None
    restarts: int = 0
    last_reason: str | None = None
    last_crash_at: float | None = None
    next_start_in_s: float | None = None


class SupervisorRecord(_Record):
    pid: int
    started_at: float


class LocalGridState(_Record):
    workers: int = 0
    """Extra worker nodes beside the head."""
    max_workers: int = 0
    """The autoscaler's local nodes at most; 0: no autoscaler."""
    database_url: str | None = None
    """None: SQLite in RGRID_HOME."""
    settings: dict[str, str] = Field(default_factory=dict)
    """Server settings passed on to the API."""
    pieces: dict[str, Piece] = Field(default_factory=dict)
    """What runs now; a piece's `ports` are those its process was given."""
    ports: dict[str, dict[str, int]] = Field(default_factory=dict)
    """The ports reserved for each piece, kept across its restarts so that
    the pieces that know its address keep working (`Supervisor.ports`)."""
    supervisor: SupervisorRecord | None = None

    def pid_of(self, name: str) -> int | None:
        piece = self.pieces.get(name)
        return piece.pid if piece is not None else None
