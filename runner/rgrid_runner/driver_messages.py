"""What the API server and its Ray driver process say to each other: one
JSON object per line, the server writing to the driver's stdin and reading
its stdout."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, TypeAdapter

from rgrid.wire import AttemptTicket


class Submit(BaseModel):
    """Run one attempt as a Ray task asking for these resources."""

    op: Literal["submit"] = "submit"
    ticket: AttemptTicket
    cpu: float
    memory_mb: int
    runtime: str


class Cancel(BaseModel):
    """Force-cancel an attempt's task, if the driver holds it."""

    op: Literal["cancel"] = "cancel"
    execution_id: str
    attempt: int


class Fence(BaseModel):
    """Have the GCS place nothing more on a node declared dead, if it is
    the worker's node (it carries the worker's resource)."""

    op: Literal["fence"] = "fence"
    ray_node_id: str
    worker_id: str


class Verify(BaseModel):
    """Ask whether a Ray node id is the worker's: alive, carrying its resource."""

    op: Literal["verify"] = "verify"
    request: int
    ray_node_id: str
    worker_id: str


class Verified(BaseModel):
    """The answer to `Verify`; None when the GCS could not be asked."""

    op: Literal["verified"] = "verified"
    request: int
    ok: bool | None


class Connected(BaseModel):
    """The driver joined the cluster and takes submissions."""

    op: Literal["connected"] = "connected"


class Capacity(BaseModel):
    """The cluster's nodes that take jobs now (said on joining, and whenever
    it changes), each as (CPUs, memory in MiB): their CPUs in all are what
    the dispatcher may hand out, and one run must fit one of them."""

    op: Literal["capacity"] = "capacity"
    nodes: list[tuple[float, float]]

    @property
    def cpus(self) -> float:
        return sum(cpus for cpus, _ in self.nodes)

    @property
    def largest_cpus(self) -> float:
        return max((cpus for cpus, _ in self.nodes), default=0.0)

    @property
    def largest_memory_mb(self) -> float:
        return max((memory for _, memory in self.nodes), default=0.0)

    def fits(self, cpu: float, memory_mb: float) -> bool:
        """Whether one run fits one of the nodes (a task runs on one node)."""
        return any(cpu <= cpus and memory_mb <= memory for cpus, memory in self.nodes)


class Settled(BaseModel):
    """An attempt's task ended (whether its runner reported is the API's to
    read: the driver never looks at what a task returned)."""

    op: Literal["settled"] = "settled"
    execution_id: str
    attempt: int


TO_DRIVER: TypeAdapter[Submit | Cancel | Fence | Verify] = TypeAdapter(
    Annotated[Submit | Cancel | Fence | Verify, Field(discriminator="op")]
)
FROM_DRIVER: TypeAdapter[Connected | Capacity | Settled | Verified] = TypeAdapter(
    Annotated[Connected | Capacity | Settled | Verified, Field(discriminator="op")]
)


def line(message: BaseModel) -> bytes:
    return message.model_dump_json().encode() + b"\n"
