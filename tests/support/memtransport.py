"""A transport in memory (rgrid_api.transport.Transport): the control
plane's core loop in one process, without Ray. It keeps every attempt it
is handed and lets the test play the cluster: connect it with some room,
end a task (with or without its runner's report), or lose a whole
generation as a dying driver process would."""

from __future__ import annotations

import threading

from rgrid_api.transport import Listener
from rgrid_runner.driver_messages import Capacity, Settled, Submit


class MemoryTransport:
    def __init__(self) -> None:
        self.listener: Listener | None = None
        self.generation = 0
        self.connected = False
        self.room: Capacity | None = None
        self.held: dict[tuple[str, int], int] = {}  # attempt -> the generation holding it
        self.submitted: list[Submit] = []
        self.cancelled: list[tuple[str, int]] = []
        self.fenced: list[str] = []
        self.verdicts: dict[str, bool] = {}  # ray node id -> is the worker's
        self.token_fp: str | None = None  # the Ray token its cluster runs with
        self._lock = threading.Lock()

    # -- the Transport protocol -------------------------------------------
    def start(self, listener: Listener) -> None:
        self.listener = listener

    def stop(self) -> None:
        self.connected = False

    def ready(self) -> int | None:
        return self.generation if self.connected else None

    def capacity(self) -> Capacity | None:
        return self.room if self.connected else None

    def alive(self, generation: int) -> bool:
        return self.connected and generation == self.generation

    def submit(self, message: Submit) -> int | None:
        if not self.connected:
            return None
        with self._lock:
            self.submitted.append(message)
            self.held[(message.ticket.execution_id, message.ticket.attempt)] = self.generation
        return self.generation

    def cancel_task(self, execution_id: str, attempt: int) -> None:
        self.cancelled.append((execution_id, attempt))

    def fence_node(self, ray_node_id: str, worker_id: str) -> None:
        self.fenced.append(ray_node_id)

    def verify_node(self, ray_node_id: str, worker_id: str) -> bool | None:
        return self.verdicts.get(ray_node_id)

    def ray_token_fingerprint(self) -> str | None:
        return self.token_fp

    # -- the test plays the cluster ----------------------------------------
    def connect(self, nodes: list[tuple[float, float]]) -> int:
        """A new generation joins a cluster of these nodes (CPUs, MiB)."""
        self.generation += 1
        self.connected = True
        self.room = Capacity(nodes=nodes)
        assert self.listener is not None
        self.listener.on_connected()
        return self.generation

    def settle(self, execution_id: str, attempt: int) -> None:
        """The attempt's task ended."""
        with self._lock:
            generation = self.held.pop((execution_id, attempt))
        assert self.listener is not None
        self.listener.on_settled(generation, Settled(execution_id=execution_id, attempt=attempt))

    def lose(self, why: str = "the driver process died") -> None:
        """The connected generation ends with everything it held."""
        self.connected = False
        with self._lock:
            self.held.clear()
        assert self.listener is not None
        self.listener.on_lost(self.generation, why)
