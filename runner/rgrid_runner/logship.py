"""Ships a script's output to the API in small batches and renews the lease.

Output is sent as soon as it appears, after a COALESCE_S pause that lets a
burst of lines travel in one request; while a request is in flight new
output accumulates into the next batch, so a chatty script costs few
requests and a quiet one is seen at once. When there is nothing to send the
same thread renews the lease. Each answer may carry a
cancel request, and a StaleAttempt answer means another attempt took over:
both are raised as events for the process supervisor to act on.
"""

from __future__ import annotations

import logging
import threading
import time

from rgrid.wire import RunnerLogLine, Stream
from rgrid_runner.reporter import Reporter, StaleAttempt

log = logging.getLogger(__name__)

COALESCE_S = 0.005
MAX_BATCH_BYTES = 256 * 1024


class LogShipper:
    def __init__(self, reporter: Reporter, renew_s: float) -> None:
        self._reporter = reporter
        self._renew_s = renew_s
        self._pending: list[RunnerLogLine] = []
        self._pending_bytes = 0
        self._cond = threading.Condition()
        self._closed = False
        self.cancel_requested = threading.Event()
        self.stale = threading.Event()
        self.stop_requested = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rgrid-logship", daemon=True)

    def __enter__(self) -> LogShipper:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def write(self, stream: Stream, data: str) -> None:
        with self._cond:
            if self._pending and self._pending[-1].stream == stream:
                self._pending[-1].data += data
            else:
                self._pending.append(RunnerLogLine(stream=stream, data=data))
            self._pending_bytes += len(data)
            self._cond.notify()

    def close(self) -> None:
        """Flush what is left and stop; returns once everything was sent."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()

    def _take(self) -> list[RunnerLogLine]:
        with self._cond:
            batch, self._pending, self._pending_bytes = self._pending, [], 0
            return batch

    def _run(self) -> None:
        last_call = time.monotonic()
        while True:
            with self._cond:
                if not self._closed and not self._pending:
                    self._cond.wait(self._renew_s)
                closing = self._closed
            if not closing and self._pending_bytes < MAX_BATCH_BYTES:
                time.sleep(COALESCE_S)
            batch = self._take()
            try:
                if batch:
                    self._handle(self._reporter.logs(batch))
                    last_call = time.monotonic()
                elif not closing and time.monotonic() - last_call >= self._renew_s:
                    self._handle(self._reporter.renew())
                    last_call = time.monotonic()
            except StaleAttempt:
                self.stale.set()
                self.stop_requested.set()
                return
            except Exception:
                log.exception("shipping logs failed")
            if closing and not self._pending:
                return

    def _handle(self, cancel: bool) -> None:
        if cancel:
            self.cancel_requested.set()
            self.stop_requested.set()
