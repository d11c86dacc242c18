"""The dispatcher: queued executions become Ray tasks.

It wakes the moment an execution is queued in this process (ChangeFeed),
and otherwise polls the database every `dispatch_poll_s` for work queued by
other servers or requeued by the monitor. Each claimed attempt becomes one
Ray task asking for the execution's CPU and memory, so Ray only places it on
a node where it fits. Ray is only the transport: when a task dies without its
runner reporting (worker crash, node loss) the attempt is requeued here.
"""

from __future__ import annotations

import logging
import threading
import time

import ray
from sqlalchemy.orm import sessionmaker

from rgrid.wire import (
    RUNTIME_REQUESTED_AMOUNT,
    AttemptTicket,
    FailureReason,
    resource_name,
    runtime_of_resource,
)
from rgrid_api.attempts import Claimed, attempt_lost, claim_queued, renew_dispatched
from rgrid_api.auth import runner_token
from rgrid_api.notify import ChangeFeed
from rgrid_api.settings import Settings
from rgrid_runner.ray_compat import drain_node
from rgrid_runner.task import run_attempt

log = logging.getLogger(__name__)

MIB = 1024 * 1024
RAY_CONNECT_RETRY_S = 2.0
WATCH_INTERVAL_S = 0.2
OFFER_TTL_S = 2.0


class Dispatcher:
    def __init__(self, settings: Settings, sessions: sessionmaker, feed: ChangeFeed) -> None:
        self.settings = settings
        self.sessions = sessions
        self.feed = feed
        self._stop = threading.Event()
        self._inflight: dict[ray.ObjectRef, Claimed] = {}
        self._lock = threading.Lock()
        self._has_inflight = threading.Event()
        self._remote = ray.remote(max_retries=0)(run_attempt)
        self._threads: list[threading.Thread] = []
        self.connected = threading.Event()
        self._offer: tuple[float, set[str]] | None = None

    def start(self) -> None:
        for target in (self._dispatch_loop, self._watch_loop):
            t = threading.Thread(target=target, name=f"rgrid-{target.__name__}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        self.feed.new_work.set()
        self._has_inflight.set()
        for t in self._threads:
            t.join(timeout=5)
        if ray.is_initialized():
            ray.shutdown()

    def _connect(self) -> bool:
        while not self._stop.is_set():
            try:
                ray.init(
                    address=self.settings.ray_address,
                    namespace="rgrid",
                    log_to_driver=False,
                    logging_level=logging.WARNING,
                )
                self.connected.set()
                log.info("dispatcher connected to Ray at %s", self.settings.ray_address)
                return True
            except Exception as exc:  # noqa: BLE001 - Ray raises many kinds while starting
                log.warning("Ray at %s not reachable (%s); retrying", self.settings.ray_address, exc)
                self._stop.wait(RAY_CONNECT_RETRY_S)
        return False

    def offered_runtimes(self) -> set[str] | None:
        """Runtimes some node of the cluster offers, or None while unknown
        (not connected to Ray yet). Cached for OFFER_TTL_S."""
        if not self.connected.is_set():
            return None
        now = time.monotonic()
        if self._offer is None or now - self._offer[0] > OFFER_TTL_S:
            try:
                resources = ray.cluster_resources()
            except Exception:  # noqa: BLE001 - unknown offer: do not refuse work
                return None
            found = {r for r in map(runtime_of_resource, resources) if r}
            self._offer = (now, found)
        return self._offer[1]

    def _dispatch_loop(self) -> None:
        if not self._connect():
            return
        while not self._stop.is_set():
            self.feed.new_work.wait(self.settings.dispatch_poll_s)
            self.feed.new_work.clear()
            try:
                self._dispatch_once()
            except Exception:
                log.exception("dispatch round failed; retrying on the next wake-up")
                self._stop.wait(self.settings.dispatch_poll_s)

    def _dispatch_once(self) -> None:
        while not self._stop.is_set():
            with self.sessions() as session:
                claimed = claim_queued(session, self.settings.lease_s)
            for c in claimed:
                self._submit(c)
            if not claimed:
                return

    def _submit(self, c: Claimed) -> None:
        ticket = AttemptTicket(
            execution_id=c.execution_id,
            attempt=c.attempt,
            api_url=self.settings.runner_api_url,
            token=runner_token(self.settings.runner_secret.get_secret_value(), c.execution_id, c.attempt),
        )
        ref = self._remote.options(
            num_cpus=c.cpu,
            memory=c.memory_mb * MIB,
            name=f"rgrid:{c.execution_id}:{c.attempt}",
            resources={resource_name(c.runtime): RUNTIME_REQUESTED_AMOUNT},
        ).remote(ticket)
        with self._lock:
            self._inflight[ref] = c
        self._has_inflight.set()
        self.feed.changed(c.execution_id)
        log.info("dispatched %s attempt %d", c.execution_id, c.attempt)

    def cancel_task(self, execution_id: str, attempt: int) -> None:
        """Force-cancel the Ray task of an attempt given up on, if we own it."""
        with self._lock:
            ref = next(
                (
                    r
                    for r, c in self._inflight.items()
                    if (c.execution_id, c.attempt) == (execution_id, attempt)
                ),
                None,
            )
        if ref is not None:
            try:
                ray.cancel(ref, force=True)
            except Exception as exc:  # noqa: BLE001 - the task may be gone already
                log.info("cancel of %s attempt %d: %s", execution_id, attempt, exc)

    def fence_node(self, ray_node_id: str) -> None:
        """Ask Ray's GCS to place nothing more on a node the monitor declared
        dead (its raylet may live on behind a hung agent)."""
        try:
            accepted, why = drain_node(self.settings.ray_address, ray_node_id, "declared dead by rgrid")
        except Exception as exc:  # noqa: BLE001 - the node or the GCS may be gone already
            log.info("fencing Ray node %s: %s", ray_node_id, exc)
            return
        if not accepted:
            log.info("Ray did not fence node %s: %s", ray_node_id, why)

    def _renew_leases(self) -> None:
        with self._lock:
            keys = [(c.execution_id, c.attempt) for c in self._inflight.values()]
        if keys:
            with self.sessions() as session:
                renew_dispatched(session, keys, self.settings.lease_s)

    def _watch_loop(self) -> None:
        next_renewal = 0.0
        while not self._stop.is_set():
            if time.monotonic() >= next_renewal:
                next_renewal = time.monotonic() + self.settings.lease_s / 3
                try:
                    self._renew_leases()
                except Exception:
                    log.exception("renewing dispatched leases failed")
            self._has_inflight.wait(1.0)
            with self._lock:
                refs = list(self._inflight)
                if not refs:
                    self._has_inflight.clear()
                    continue
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=WATCH_INTERVAL_S, fetch_local=False)
            for ref in ready:
                with self._lock:
                    claimed = self._inflight.pop(ref)
                try:
                    self._settle(ref, claimed)
                except Exception:
                    # No longer renewed by us, the attempt's lease runs out
                    # and the monitor gives it back: nothing is lost.
                    log.exception(
                        "settling %s attempt %d failed; its lease will expire",
                        claimed.execution_id,
                        claimed.attempt,
                    )

    def _settle(self, ref: ray.ObjectRef, c: Claimed) -> None:
        """A task ended. If its runner reported, the attempt is already final
        and attempt_lost is a no-op; otherwise the transport lost it."""
        try:
            ray.get(ref)
            reason = FailureReason.INTERNAL
        except Exception as exc:  # noqa: BLE001 - any task failure means the attempt is lost
            log.warning("attempt %d of %s lost in Ray: %s", c.attempt, c.execution_id, exc)
            reason = FailureReason.WORKER_LOST
        with self.sessions() as session:
            requeued = attempt_lost(session, c.execution_id, c.attempt, reason)
        if requeued:
            self.feed.work_queued()
        self.feed.changed(c.execution_id)
