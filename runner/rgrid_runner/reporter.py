"""The runner's side of the runner API: every call fenced by (id, attempt)."""

from __future__ import annotations

import logging
import time

import httpx

from rgrid.wire import (
    RunnerAck,
    RunnerLogBatch,
    RunnerLogLine,
    RunnerOutputRequest,
    RunnerOutputUrls,
    RunnerResult,
    RunnerSpec,
    RunnerStart,
)

log = logging.getLogger(__name__)

RETRIES = 5
BACKOFF_S = 0.2


class StaleAttempt(Exception):
    """The API says this attempt is no longer current: stop at once."""


class Reporter:
    def __init__(self, api_url: str, execution_id: str, attempt: int, token: str) -> None:
        self._http = httpx.Client(
            base_url=f"{api_url.rstrip('/')}/v1/runner/{execution_id}/{attempt}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30.0,
        )

    def close(self) -> None:
        self._http.close()

    def _post(self, path: str, body: object | None = None) -> httpx.Response:
        """POST with retries on transport errors and 5xx; 409 means fenced."""
        payload = body.model_dump(mode="json") if body is not None else None  # type: ignore[attr-defined]
        delay = BACKOFF_S
        for attempt in range(RETRIES):
            try:
                resp = self._http.post(path, json=payload)
            except httpx.TransportError as exc:
                if attempt == RETRIES - 1:
                    raise
                log.warning("runner call %s failed (%s); retrying", path, exc)
            else:
                if resp.status_code == 409:
                    raise StaleAttempt(resp.json().get("detail", "stale attempt"))
                if resp.status_code < 500 or attempt == RETRIES - 1:
                    resp.raise_for_status()
                    return resp
                log.warning("runner call %s got %d; retrying", path, resp.status_code)
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

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
