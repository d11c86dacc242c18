"""An attempt process, started and kept by the node's attempt service.

`python -m rgrid_runner.attemptproc`, as root on an isolating node. It
imports rgrid's runner, builds the node's configuration and formats a work
disk first, and only then waits for orders on stdin, one JSON line per
attempt: the service keeps such processes waiting, so an attempt starts
without paying for any of that. It runs each attempt (rgrid_runner.task)
and writes how it ended as one line on stdout; everything else it says goes
to stderr. It ends when its input does.

SIGTERM means the Ray task of the attempt it runs is gone: the job is
stopped, nothing is reported, the attempt's network, cgroup and disk are
cleaned up, and the process exits.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

from rgrid.wire import AttemptTicket
from rgrid_runner.attemptservice import NODE_CREDENTIAL_ENV, AttemptOrder
from rgrid_runner.config import runner_config
from rgrid_runner.lifeline import ensure_lifeline
from rgrid_runner.task import run_attempt


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The result lines are the only stdout; whatever else prints goes to stderr.
    results = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    current = [threading.Event()]  # the running attempt's, swapped per order
    signal.signal(signal.SIGTERM, lambda *_: current[0].set())
    ensure_lifeline()
    # Taken out of the environment: nothing this process starts inherits it.
    node_credential = os.environ.pop(NODE_CREDENTIAL_ENV, "")
    disks = runner_config().disks
    disks.prepare()
    for raw in sys.stdin.buffer:
        order = AttemptOrder.model_validate_json(raw)
        ticket = AttemptTicket(
            execution_id=order.execution_id, attempt=order.attempt, api_url=order.api_url, token=order.token
        )
        abandoned = current[0] = threading.Event()
        outcome = run_attempt(ticket, node_credential, order.ray_node_id, abandoned)
        results.write(f"{outcome}\n")
        results.flush()
        if abandoned.is_set():
            return 0
        disks.prepare()  # the next attempt's disk, off its path
    return 0


if __name__ == "__main__":
    sys.exit(main())
