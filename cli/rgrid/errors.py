"""Exit codes of the CLI contract and the errors that carry them.

Every expected failure is one of these: the CLI prints its message on one
line and exits with its code, never with a traceback.
"""

from __future__ import annotations

from rgrid.wire import BatchView, ExecutionView, FailureReason, Status

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_INFRA = 75
EXIT_AUTH = 77
EXIT_TIMEOUT = 124
EXIT_CANCELLED = 130
EXIT_OOM = 137


class StaleAttempt(Exception):
    """An attempt that is no longer current (fencing): the API answers its
    runner 409, and the runner stops at once."""

    status_code = 409


class RgridError(Exception):
    exit_code = EXIT_INFRA


class UsageError(RgridError):
    exit_code = EXIT_USAGE


class AuthRefused(RgridError):
    exit_code = EXIT_AUTH


class Unreachable(RgridError):
    exit_code = EXIT_INFRA


class ApiError(RgridError):
    """The API answered with an error. A key refused for what it asked (403)
    is an authentication failure; a cap or rate limit (429) and the server's
    own faults are the grid's; other 4xx are usage errors."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        if status == 403:
            self.exit_code = EXIT_AUTH
        elif 400 <= status < 500 and status != 429:
            self.exit_code = EXIT_USAGE
        else:
            self.exit_code = EXIT_INFRA


def exit_code_for(execution: ExecutionView) -> int:
    """The code `rgrid run` exits with: the script's own where it ran to the end."""
    if execution.status == Status.SUCCEEDED:
        return EXIT_OK
    reason = execution.failure_reason
    if execution.status == Status.CANCELLED or reason == FailureReason.CANCELLED:
        return EXIT_CANCELLED
    if reason in (FailureReason.UNSCHEDULABLE, FailureReason.REQUIREMENTS):
        return EXIT_USAGE
    if reason == FailureReason.TIMEOUT:
        return EXIT_TIMEOUT
    if reason == FailureReason.OUT_OF_MEMORY:
        return EXIT_OOM
    if reason in (FailureReason.EXIT_CODE, FailureReason.PROCESS_LIMIT) and execution.exit_code:
        return execution.exit_code
    return EXIT_INFRA


# Failures that say nothing about the script: the grid could not run it.
INFRA_REASONS = frozenset(
    {FailureReason.WORKER_LOST, FailureReason.INTERNAL, FailureReason.DEPENDENCY_INSTALL}
)


def exit_code_for_batch(batch: BatchView) -> int:
    """0 only if every input succeeded; 130 if the batch was cancelled; 75
    if the grid failed some input; else 1 (the summary names the inputs)."""
    if batch.status == Status.SUCCEEDED:
        return EXIT_OK
    if batch.status == Status.CANCELLED:
        return EXIT_CANCELLED
    if any(e.failure_reason in INFRA_REASONS for e in batch.executions):
        return EXIT_INFRA
    return 1
