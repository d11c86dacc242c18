"""The small Python client the CLI is built on: one method per API call.

Calls are retried under the shared policy (`rgrid.retry`): uploads and reads
are idempotent; creating an execution is the one call that is not retried
once the server may have accepted it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from rgrid.config import Target
from rgrid.errors import ApiError, AuthRefused, Unreachable
from rgrid.http import api_detail, http_client
from rgrid.retry import API_CALLS, TRANSFERS, Backoff, call_with_retry, raise_for_retryable
from rgrid.wire import (
    AutoscalerStatus,
    BatchCreate,
    BatchList,
    BatchOutputs,
    BatchView,
    ConsoleLink,
    CostReport,
    Estimate,
    EstimateRequest,
    ExecutionCreate,
    ExecutionList,
    ExecutionView,
    GridCapacity,
    Health,
    LogPage,
    ObjectSpec,
    OutputList,
    UploadCompletion,
    UploadPlan,
    UploadPlanRequest,
    WorkerAck,
    WorkerList,
)

M = TypeVar("M", bound=BaseModel)
# Creating an execution is not idempotent: once the server may have accepted
# it, the call is not repeated.
ONCE = Backoff(tries=1, first_s=0.0, max_s=0.0)


class Client:
    def __init__(self, target: Target, timeout: float = 30.0) -> None:
        self.target = target
        self._http = http_client(
            base_url=target.api_url,
            headers={"Authorization": f"Bearer {target.api_key}"},
            timeout=timeout,
        )
        self._timeout = timeout
        self._storage: httpx.Client | None = None

    @property
    def storage(self) -> httpx.Client:
        """Presigned URLs go to storage with their own signature; the API key
        must never travel there, so storage gets its own client without it."""
        if self._storage is None:
            self._storage = http_client(timeout=httpx.Timeout(self._timeout, read=300.0))
        return self._storage

    def close(self) -> None:
        self._http.close()
        if self._storage is not None:
            self._storage.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _request(
        self,
        method: str,
        path: str,
        *,
        backoff: Backoff = API_CALLS,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """One API call under the shared retry policy; an error answer becomes
        the matching RgridError."""

        def attempt() -> httpx.Response:
            if timeout is not None:
                kwargs["timeout"] = timeout
            return raise_for_retryable(self._http.request(method, path, **kwargs))

        try:
            resp = call_with_retry(attempt, backoff, f"{method} {path}")
        except httpx.TransportError as exc:
            raise Unreachable(
                f"cannot reach the rgrid API at {self.target.api_url} ({exc.__class__.__name__})"
            ) from None
        except httpx.HTTPStatusError as exc:
            resp = exc.response
        self._check(resp)
        return resp

    def _call(self, method: str, path: str, model: type[M], **kwargs: Any) -> M:
        return model.model_validate_json(self._request(method, path, **kwargs).content)

    def _check(self, resp: httpx.Response) -> None:
        if resp.status_code == 401:
            raise AuthRefused(
                f"the API at {self.target.api_url} refused the API key "
                "(run `rgrid init` or set RGRID_API_KEY)"
            )
        if resp.status_code >= 400:
            raise ApiError(resp.status_code, f"API error {resp.status_code}: {api_detail(resp)}")

    def health(self) -> Health:
        return self._call("GET", "/healthz", Health)

    def plan_uploads(self, objects: list[ObjectSpec]) -> UploadPlan:
        body = UploadPlanRequest(objects=objects).model_dump(mode="json")
        return self._call("POST", "/v1/uploads/plan", UploadPlan, json=body)

    def complete_upload(self, done: UploadCompletion) -> None:
        """The API assembles and verifies what was sent, talking to storage
        itself: a restarting storage answers 503 for as long as it fails a
        transfer, and the completion rides that out as a transfer does."""
        self._request(
            "POST",
            "/v1/uploads/complete",
            backoff=TRANSFERS,
            json=done.model_dump(mode="json"),
            timeout=600.0,
        )

    def create_execution(self, body: ExecutionCreate) -> ExecutionView:
        return self._call(
            "POST", "/v1/executions", ExecutionView, backoff=ONCE, json=body.model_dump(mode="json")
        )

    def get_execution(self, execution_id: str, provenance: bool = False) -> ExecutionView:
        params = {"provenance": True} if provenance else None
        return self._call("GET", f"/v1/executions/{execution_id}", ExecutionView, params=params)

    def list_executions(self, limit: int = 50) -> ExecutionList:
        return self._call("GET", "/v1/executions", ExecutionList, params={"limit": limit})

    def cancel(self, execution_id: str) -> ExecutionView:
        return self._call("POST", f"/v1/executions/{execution_id}/cancel", ExecutionView)

    def retry(self, execution_id: str, exact: bool = False) -> ExecutionView:
        return self._call(
            "POST",
            f"/v1/executions/{execution_id}/retry",
            ExecutionView,
            backoff=ONCE,
            params={"exact": exact},
        )

    def logs(self, execution_id: str, after: int = 0, wait: float = 0.0) -> LogPage:
        return self._call(
            "GET",
            f"/v1/executions/{execution_id}/logs",
            LogPage,
            params={"after": after, "wait": wait},
            timeout=wait + 30.0,
        )

    def create_batch(self, body: BatchCreate) -> BatchView:
        return self._call("POST", "/v1/batches", BatchView, backoff=ONCE, json=body.model_dump(mode="json"))

    def get_batch(
        self, batch_id: str, executions: bool = True, notable: bool = False, limit: int | None = None
    ) -> BatchView:
        """`notable`: only the executions running or ended other than
        succeeded, at most `limit` (the server filters)."""
        params: dict[str, str | int | bool] = {"executions": executions}
        if notable:
            params["notable"] = True
        if limit is not None:
            params["limit"] = limit
        return self._call("GET", f"/v1/batches/{batch_id}", BatchView, params=params)

    def batch_outputs(self, batch_id: str) -> BatchOutputs:
        return self._call("GET", f"/v1/batches/{batch_id}/outputs", BatchOutputs)

    def list_batches(self, limit: int = 50) -> BatchList:
        return self._call("GET", "/v1/batches", BatchList, params={"limit": limit})

    def retry_batch(self, batch_id: str, failed_only: bool) -> BatchView:
        return self._call(
            "POST", f"/v1/batches/{batch_id}/retry", BatchView, backoff=ONCE, params={"failed": failed_only}
        )

    def cancel_batch(self, batch_id: str) -> BatchView:
        return self._call("POST", f"/v1/batches/{batch_id}/cancel", BatchView)

    def autoscaler(self) -> AutoscalerStatus:
        return self._call("GET", "/v1/autoscaler", AutoscalerStatus)

    def cost(self, since: datetime | None) -> CostReport:
        params = {"since": since.isoformat()} if since else {}
        return self._call("GET", "/v1/cost", CostReport, params=params)

    def estimate(self, body: EstimateRequest) -> Estimate:
        return self._call("POST", "/v1/estimate", Estimate, json=body.model_dump(mode="json"))

    def workers(self, include_ended: bool = False) -> WorkerList:
        return self._call("GET", "/v1/workers", WorkerList, params={"all": include_ended})

    def grid(self) -> GridCapacity:
        return self._call("GET", "/v1/grid", GridCapacity)

    def drain_worker(self, worker_id: str) -> WorkerAck:
        return self._call("POST", f"/v1/grid/workers/{worker_id}/drain", WorkerAck)

    def console_link(self) -> ConsoleLink:
        return self._call("POST", "/v1/console/link", ConsoleLink)

    def outputs(self, execution_id: str) -> OutputList:
        return self._call("GET", f"/v1/executions/{execution_id}/outputs", OutputList)
