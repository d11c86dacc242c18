"""The Ray driver: the only process of the control plane that joins Ray.

Ray ends a driver whose GCS stays unreachable, and a driver cannot move to a
new cluster, so the driver lives in a child process of the API server
(`rgrid_api.driver_process` starts and restarts it) and the server itself
never imports Ray. It turns `Submit` lines on stdin into Ray tasks and
reports each task's end on stdout; it holds no state the database does not.
Stdin closing means the server is gone: the driver leaves Ray, and Ray
stops the tasks it owned.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import threading
from typing import IO

import ray

from rgrid.wire import (
    RUNTIME_REQUESTED_AMOUNT,
    RUNTIME_RESOURCE_PREFIX,
    WORKER_RESOURCE_PREFIX,
    resource_name,
)
from rgrid_runner.driver_messages import (
    TO_DRIVER,
    Cancel,
    Capacity,
    Connected,
    Fence,
    Settled,
    Submit,
    Verified,
    Verify,
    line,
)
from rgrid_runner.ray_compat import NODE_ID_LABEL, drain_node, job_nodes, node_alive, node_carries
from rgrid_runner.raytask import run_attempt

log = logging.getLogger("rgrid_runner.raydriver")

MIB = 1024 * 1024
WATCH_INTERVAL_S = 0.2
EXIT_GRACE_S = 5.0
# A frozen node never answers its drain; Ray declares it dead in the end
# (about a minute with its default health checks), which fences it anyway.
FENCE_TIMEOUT_S = 30.0
FENCE_CHECK_S = 5.0
CAPACITY_CHECK_S = 1.0
PR_SET_DUMPABLE = 4


class RayDriver:
    def __init__(self, address: str, out: IO[bytes]) -> None:
        self.address = address
        self.out = out
        self._out_lock = threading.Lock()
        self._lock = threading.Lock()
        self._inflight: dict[ray.ObjectRef, tuple[str, int]] = {}
        self._has_inflight = threading.Event()
        self._stop = threading.Event()
        # Ray node ids (hex) fenced while their drain has not landed.
        self._fenced: set[str] = set()
        self._remote = ray.remote(max_retries=0)(run_attempt)

    def run(self) -> int:
        threading.Thread(target=self._read_commands, name="rgrid-driver-stdin", daemon=True).start()
        ray.init(address=self.address, namespace="rgrid", log_to_driver=False, logging_level=logging.WARNING)
        log.info("Ray driver connected to %s", self.address)
        self._send(Connected())
        threading.Thread(target=self._report_capacity, name="rgrid-capacity", daemon=True).start()
        try:
            self._watch()
        finally:
            ray.shutdown()
        return 0

    def _send(self, message: Connected | Capacity | Settled | Verified) -> None:
        with self._out_lock:
            self.out.write(line(message))
            self.out.flush()

    def _read_commands(self) -> None:
        for raw in sys.stdin.buffer:
            try:
                command = TO_DRIVER.validate_json(raw)
                if isinstance(command, Submit):
                    self._submit_or_settle(command)
                elif isinstance(command, Cancel):
                    self._cancel(command)
                elif isinstance(command, Verify):
                    threading.Thread(target=self._verify, args=(command,), daemon=True).start()
                else:
                    threading.Thread(target=self._fence, args=(command,), daemon=True).start()
            except Exception:
                log.exception("command failed: %s", raw[:200])
        # The server is gone: leave Ray now; if Ray hangs, leave anyway.
        self._stop.set()
        self._has_inflight.set()
        threading.Timer(EXIT_GRACE_S, os._exit, (0,)).start()

    def _submit_or_settle(self, s: Submit) -> None:
        """A submit Ray refuses is settled at once, so the attempt goes back
        (or fails) now instead of waiting in `dispatched` for nothing."""
        try:
            self._submit(s)
        except Exception:
            log.exception("Ray refused %s attempt %d", s.ticket.execution_id, s.ticket.attempt)
            self._send(Settled(execution_id=s.ticket.execution_id, attempt=s.ticket.attempt))

    def _submit(self, s: Submit) -> None:
        with self._lock:
            fenced = sorted(self._fenced)
        avoid = {NODE_ID_LABEL: f"!in({','.join(fenced)})"} if fenced else None
        ref = self._remote.options(
            num_cpus=s.cpu,
            memory=s.memory_mb * MIB,
            name=f"rgrid:{s.ticket.execution_id}:{s.ticket.attempt}",
            resources={resource_name(s.runtime): RUNTIME_REQUESTED_AMOUNT},
            label_selector=avoid,
        ).remote(s.ticket)
        with self._lock:
            self._inflight[ref] = (s.ticket.execution_id, s.ticket.attempt)
        self._has_inflight.set()

    def _cancel(self, c: Cancel) -> None:
        with self._lock:
            ref = next((r for r, key in self._inflight.items() if key == (c.execution_id, c.attempt)), None)
        if ref is not None:
            try:
                ray.cancel(ref, force=True)
            except Exception as exc:  # noqa: BLE001 - the task may be gone already
                log.info("cancel of %s attempt %d: %s", c.execution_id, c.attempt, exc)

    def _is_workers(self, ray_node_id: str, worker_id: str) -> bool | None:
        """Whether the node carries the worker's resource; None if the GCS
        could not be asked."""
        try:
            return node_carries(self.address, ray_node_id, f"{WORKER_RESOURCE_PREFIX}{worker_id}")
        except Exception as exc:  # noqa: BLE001 - the GCS may be restarting
            log.info("asking the GCS about node %s: %s", ray_node_id, exc)
            return None

    def _verify(self, v: Verify) -> None:
        self._send(Verified(request=v.request, ok=self._is_workers(v.ray_node_id, v.worker_id)))

    def _fence(self, f: Fence) -> None:
        """Keep new tasks off a node rgrid declared dead: every submit from
        now on excludes it by its label, and Ray is asked to drain it. Only
        the worker's own node: an id a node claimed falsely fences nothing.
        Runs in a thread of its own: the GCS and the drain wait on nodes,
        which may be frozen, and must never hold up the commands behind."""
        if not self._is_workers(f.ray_node_id, f.worker_id):
            log.warning("not fencing Ray node %s: it is not worker %s's", f.ray_node_id, f.worker_id)
            return
        with self._lock:
            self._fenced.add(f.ray_node_id)
        self._drain(f.ray_node_id)

    def _drain(self, node_id: str) -> None:
        """The drain tells Ray itself, but only once the node's raylet
        answers, which a frozen one never does. The label exclusion holds
        until the drain lands or Ray counts the node dead."""
        try:
            accepted, why = drain_node(self.address, node_id, "declared dead by rgrid", FENCE_TIMEOUT_S)
            if not accepted:
                log.info("Ray did not fence node %s: %s", node_id, why)
        except Exception as exc:  # noqa: BLE001 - the node or the GCS may be gone already, or the node frozen
            log.info("fencing Ray node %s: %s", node_id, exc)
            accepted = False
        while not accepted and not self._stop.is_set():
            try:
                if not node_alive(self.address, node_id):
                    break
            except Exception as exc:  # noqa: BLE001 - the GCS may be restarting: keep the fence meanwhile
                log.info("checking fenced Ray node %s: %s", node_id, exc)
            self._stop.wait(FENCE_CHECK_S)
        with self._lock:
            self._fenced.discard(node_id)

    def _report_capacity(self) -> None:
        """Say the cluster's job CPUs now and whenever they change: nodes
        join, drain and die without the driver being told."""
        said = None
        while not self._stop.is_set():
            try:
                nodes = job_nodes(self.address, RUNTIME_RESOURCE_PREFIX)
            except Exception as exc:  # noqa: BLE001 - the GCS may be restarting: keep the last word
                log.info("reading the cluster's capacity: %s", exc)
            else:
                now = Capacity(nodes=sorted((cpus, memory / MIB) for cpus, memory in nodes))
                if now != said:
                    self._send(now)
                    said = now
            self._stop.wait(CAPACITY_CHECK_S)

    def _watch(self) -> None:
        while not self._stop.is_set():
            self._has_inflight.wait(1.0)
            with self._lock:
                refs = list(self._inflight)
                if not refs:
                    self._has_inflight.clear()
                    continue
            # Only whether a task ended, never what it returned: its result
            # (or its exception) is a pickle a compromised node could craft.
            # How an attempt ended is for its runner to tell the API.
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=WATCH_INTERVAL_S, fetch_local=False)
            for ref in ready:
                with self._lock:
                    execution_id, attempt = self._inflight.pop(ref)
                self._send(Settled(execution_id=execution_id, attempt=attempt))


def main() -> None:
    # Not dumpable: other processes of its uid (Ray's workers, where the
    # driver runs as the Ray user) may not open its /proc files, its pipes
    # to the server (every ticket, and what the server believes) included.
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    # Ray or a library may print to stdout; only protocol lines may go there.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(RayDriver(sys.argv[1], out).run())


if __name__ == "__main__":
    main()
