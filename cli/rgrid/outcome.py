"""How a run ended, in the words every command uses: "succeeded",
"failed (exit code 3)", "failed: timeout", "cancelled". One wording, so
`run`, `status`, `list` and `cancel` never say a thing twice."""

from __future__ import annotations

from rgrid.wire import FailureReason, Status


def describe(status: Status, reason: FailureReason | None, exit_code: int | None) -> str:
    if status != Status.FAILED or reason is None:
        return str(status)
    if reason in (FailureReason.EXIT_CODE, FailureReason.PROCESS_LIMIT) and exit_code is not None:
        extra = ", process limit" if reason == FailureReason.PROCESS_LIMIT else ""
        return f"failed (exit code {exit_code}{extra})"
    return f"failed: {reason}"
