"""Ties a Ray worker process to its raylet.

Ray puts each worker process in a process group of its own, so when a node
crashes (its agent's process group is killed) a worker can outlive its
raylet for a while and keep running an attempt nobody supervises. The
lifeline notices the parent is gone and ends the process at once; the
sandbox dies with it (bubblewrap's die-with-parent, the attempt's cgroup).
"""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger(__name__)

CHECK_S = 0.2
_started = threading.Event()


def ensure_lifeline() -> None:
    """Start the watcher once per process (idempotent)."""
    if _started.is_set():
        return
    _started.set()
    parent = os.getppid()

    def watch() -> None:
        stop = threading.Event()
        while not stop.wait(CHECK_S):
            if os.getppid() != parent:
                log.error("raylet %d is gone; this worker process ends with its node", parent)
                os._exit(1)

    threading.Thread(target=watch, name="rgrid-lifeline", daemon=True).start()
