"""Ships a script's output to the API in small batches and renews the lease.

Output is sent as soon as it appears, after a COALESCE_S pause that lets a
burst of lines travel in one request; while a request is in flight new
output accumulates into the next batch, so a chatty script costs few
requests and a quiet one is seen at once. The one exception is the start:
output of the attempt's first HOLD_S waits, so that a short job's whole
output travels with its result (`close` hands back what was not sent) and
costs no request of its own. When there is nothing to send the same thread
renews the lease. Each answer may carry a cancel request, and a StaleAttempt
answer means another attempt took over: both are raised as events for the
process supervisor to act on.
"""

from __future__ import annotations

import logging
import threading
import time

from rgrid.errors import StaleAttempt
from rgrid.wire import RunnerLogLine, Stream
from rgrid_runner.reporter import Reporter

log = logging.getLogger(__name__)

COALESCE_S = 0.005
HOLD_S = 0.25
MAX_BATCH_BYTES = 256 * 1024


class LogShipper:
    def __init__(self, reporter: Reporter, renew_s: float, hold_s: float = HOLD_S) -> None:
        self._reporter = reporter
        self._renew_s = renew_s
        self._hold_s = hold_s
        self._pending: list[RunnerLogLine] = []
        self._pending_bytes = 0
        self._cond = threading.Condition()
        self._closed = False
        self.cancel_requested = threading.Event()
        self.stale = threading.Event()
        self.stop_requested = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rgrid-logship", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def write(self, stream: Stream, data: str) -> None:
        with self._cond:
            if self._pending and self._pending[-1].stream == stream:
                self._pending[-1].data += data
            else:
                self._pending.append(RunnerLogLine(stream=stream, data=data))
            self._pending_bytes += len(data)
            self._cond.notify()

    def close(self) -> list[RunnerLogLine]:
        """Stop shipping; the output not yet sent is returned, to travel
        with the result."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()
        return self._take()

    def _take(self) -> list[RunnerLogLine]:
        with self._cond:
            batch, self._pending, self._pending_bytes = self._pending, [], 0
            return batch

    def _wait(self, hold_until: float, renew_at: float) -> bool:
        """Wait until there is output to send (past the hold, or a full
        batch), a renewal is due, or the shipper closes; True once closing."""
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                if self._pending_bytes >= MAX_BATCH_BYTES or (self._pending and now >= hold_until):
                    break
                if now >= renew_at:
                    break
                self._cond.wait((min(renew_at, hold_until) if self._pending else renew_at) - now)
            return self._closed

    def _run(self) -> None:
        started = last_call = time.monotonic()
        while not self._wait(started + self._hold_s, last_call + self._renew_s):
            if self._pending_bytes < MAX_BATCH_BYTES:
                time.sleep(COALESCE_S)
            batch = self._take()
            try:
                self._handle(self._reporter.logs(batch) if batch else self._reporter.renew())
            except StaleAttempt:
                self.stale.set()
                self.stop_requested.set()
                return
            except Exception:
                log.exception("shipping logs failed")
            last_call = time.monotonic()

    def abandon(self) -> None:
        """The Ray task that placed this attempt is gone (cancelled, fenced,
        its raylet dead): stop the job and report nothing, as for a stale
        attempt. The control plane settles the attempt itself."""
        self.stale.set()
        self.stop_requested.set()

    def _handle(self, cancel: bool) -> None:
        if cancel:
            self.cancel_requested.set()
            self.stop_requested.set()
