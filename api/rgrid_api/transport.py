"""The transport: how the control plane hands attempts to the machines
that run them. In production it is Ray, through a supervised driver process
(`rgrid_api.driver_process.DriverProcess`); the fast tests use
`tests.support.memtransport.MemoryTransport`, which keeps what it is handed
in memory and lets the test settle or lose it.

The dispatcher is the transport's listener: it is told when a transport
connects (or sees more room), when a task ended, and when everything a
transport generation held is gone.
"""

from __future__ import annotations

from typing import Protocol

from rgrid_runner.driver_messages import Capacity, Settled, Submit


class Listener(Protocol):
    def on_connected(self) -> None:
        """Connected, or more room: there may be more to hand out."""

    def on_settled(self, generation: int, settled: Settled) -> None:
        """A task ended (its runner may or may not have reported)."""

    def on_lost(self, generation: int, why: str) -> None:
        """A generation ended: every attempt it held is gone."""


class Transport(Protocol):
    def start(self, listener: Listener) -> None: ...

    def stop(self) -> None: ...

    def ready(self) -> int | None:
        """The generation that takes attempts now, or None."""

    def capacity(self) -> Capacity | None:
        """The grid's job nodes as the transport last saw them."""

    def alive(self, generation: int) -> bool: ...

    def submit(self, message: Submit) -> int | None:
        """Hand an attempt over; the generation that took it, or None."""

    def cancel_task(self, execution_id: str, attempt: int) -> None:
        """Force-cancel the task of an attempt that was given back."""

    def fence_node(self, ray_node_id: str, worker_id: str) -> None:
        """Place no new task on a node declared dead (if it is the worker's
        node: the transport checks)."""

    def verify_node(self, ray_node_id: str, worker_id: str) -> bool | None:
        """Whether the node is the worker's; None if it cannot tell now."""

    def ray_token_fingerprint(self) -> str | None:
        """The Ray token the connected generation's cluster runs with (None:
        a transport without one); the claim checks it is the one in force."""
