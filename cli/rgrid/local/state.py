"""What RGRID_HOME/local/state.json holds: the grid's wanted shape (worker
nodes, database, autoscaling, settings) as `rgrid local up` last asked,
and what the supervisor runs (each piece's process, ports and restarts).

The CLI and the supervisor both write it, one at a time under the grid's
file lock (`LocalGrid.locked`). A field that a newer rgrid added and an
older one does not know is ignored, not lost on the next save: extra keys
are kept.

Read with `LocalGridState.read`, a damaged value (a type a newer rgrid
changed, a hand edit) reads as its default and a damaged piece is left
out, so that `rgrid local down` still stops every process it can name.
Assignments in code are checked strictly.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
)

log = logging.getLogger(__name__)
_LENIENT = {"lenient": True}


class _Record(BaseModel):
    # Built on first use: `rgrid run` imports this on its way.
    model_config = ConfigDict(defer_build=True, extra="allow", validate_assignment=True)

    @field_validator("*", mode="wrap")
    @classmethod
    def _damaged_reads_as_default(
        cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
    ) -> Any:
        try:
            return handler(value)
        except ValidationError:
            field = cls.model_fields.get(info.field_name or "")
            if info.context != _LENIENT or field is None or field.is_required():
                raise  # a record without a required field: where it is optional, it reads as None
            log.warning("state.json: %s of %r is damaged; read as its default", info.field_name, value)
            return field.get_default(call_default_factory=True)


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
    started_at: float | None = None


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

    @classmethod
    def read(cls, data: object) -> LocalGridState:
        """The state a file held, its damaged values at their defaults (a
        file that is no JSON object at all is refused: ValidationError)."""
        return cls.model_validate(data, context=_LENIENT)

    @field_validator("pieces", mode="before")
    @classmethod
    def _pieces_that_read(cls, value: Any, info: ValidationInfo) -> Any:
        """Each piece on its own: one that is no object is left out."""
        if info.context != _LENIENT or not isinstance(value, dict):
            return value
        return {name: piece for name, piece in value.items() if isinstance(piece, dict)}

    def pid_of(self, name: str) -> int | None:
        piece = self.pieces.get(name)
        return piece.pid if piece is not None else None
