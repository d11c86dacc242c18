"""One attempt's own process, started by the node's attempt service.

`python -m rgrid_runner.attemptproc`, as root on an isolating node. It
imports rgrid's runner and builds the node's configuration first, formats
its work disk ahead, and only then waits for its order on stdin: the
service keeps one such spare ready, so an attempt starts without paying
for any of that. It runs one attempt (rgrid_runner.task) and writes how it
ended as its one line on stdout; everything else it says goes to stderr.

SIGTERM means the Ray task that placed the attempt is gone: the job is
stopped, nothing is reported, and the attempt's network, cgroup and disk
are cleaned up before the process ends.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

from rgrid.wire import AttemptTicket
from rgrid_runner.attemptservice import AttemptOrder
from rgrid_runner.config import runner_config
from rgrid_runner.lifeline import ensure_lifeline
from rgrid_runner.task import run_attempt


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The one line on stdout is the result; whatever prints goes to stderr.
    result = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    abandoned = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: abandoned.set())
    ensure_lifeline()
    runner_config().disks.prepare()
    raw = sys.stdin.buffer.readline()
    if not raw:
        return 0  # a spare the service no longer needs
    order = AttemptOrder.model_validate_json(raw)
    ticket = AttemptTicket(
        execution_id=order.execution_id, attempt=order.attempt, api_url=order.api_url, token=order.token
    )
    outcome = run_attempt(ticket, order.ray_node_id, abandoned)
    result.write(f"{outcome}\n")
    result.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
