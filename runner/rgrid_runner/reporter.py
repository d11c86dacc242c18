"""The runner's side of the runner API: every call fenced by (id, attempt)."""

from __future__ import annotations

import httpx
from pydantic import BaseModel

from rgrid.errors import StaleAttempt
from rgrid.http import api_detail
from rgrid.retry import RUNNER_CALLS, call_with_retry, raise_for_retryable
from rgrid.wire import (
    AttemptTicket,
    RunnerAck,
    RunnerLogBatch,
    RunnerLogLine,
    RunnerOutputRequest,
    RunnerOutputUrls,
    RunnerResult,
    RunnerSpec,
    RunnerStart,
)

CALL_TIMEOUT_S = 30.0


class Reporter:
    """Speaks for one attempt, over the worker process's shared client:
    with its ticket's token, and the credential of the node that runs it
    (the API binds the attempt to that node when it starts)."""

    def __init__(self, http: httpx.Client, ticket: AttemptTicket, node_credential: str) -> None:
        self._http = http
        self._base = f"{ticket.api_url.rstrip('/')}/v1/runner/{ticket.execution_id}/{ticket.attempt}"
        self._headers = {"Authorization": f"Bearer {ticket.token}", "X-Rgrid-Node": node_credential}

    def _post(self, path: str, body: BaseModel | None = None) -> httpx.Response:
        """POST under the shared retry policy; 409 means this attempt was
        fenced off, and a refused token that it was never this runner's."""
        payload = body.model_dump(mode="json") if body is not None else None

        def once() -> httpx.Response:
            return raise_for_retryable(
                self._http.post(
                    self._base + path, json=payload, headers=self._headers, timeout=CALL_TIMEOUT_S
                )
            )

        resp = call_with_retry(once, RUNNER_CALLS, f"runner call {path}")
        if resp.status_code == 409:
            raise StaleAttempt(api_detail(resp))
        if resp.status_code in (401, 403):
            raise StaleAttempt(f"the API refused this attempt's call: {api_detail(resp)}")
        resp.raise_for_status()
        return resp

    def start(self, start: RunnerStart) -> RunnerSpec:
        return RunnerSpec.model_validate_json(self._post("/start", start).content)

    def renew(self) -> bool:
        return RunnerAck.model_validate_json(self._post("/renew").content).cancel

    def logs(self, lines: list[RunnerLogLine]) -> bool:
        return RunnerAck.model_validate_json(self._post("/logs", RunnerLogBatch(lines=lines)).content).cancel

    def output_urls(self, paths: list[str]) -> dict[str, str]:
        return RunnerOutputUrls.model_validate_json(
            self._post("/outputs", RunnerOutputRequest(paths=paths)).content
        ).urls

    def complete(self, result: RunnerResult) -> None:
        self._post("/complete", result)
