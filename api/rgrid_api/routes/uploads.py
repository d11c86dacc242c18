"""Upload negotiation: the client learns what is missing and gets URLs."""

from __future__ import annotations

from fastapi import APIRouter

from rgrid.wire import UploadCompletion, UploadPlan, UploadPlanRequest
from rgrid_api.deps import DB, Owner, State
from rgrid_api.uploads import complete_upload, plan_uploads

router = APIRouter(prefix="/v1/uploads", tags=["uploads"])


@router.post("/plan", response_model=UploadPlan)
def plan(body: UploadPlanRequest, owner: Owner, session: DB, state: State) -> UploadPlan:
    plan = plan_uploads(session, state.storage, state.settings, owner, body.objects)
    session.commit()
    return plan


@router.post("/complete", status_code=204)
def complete(body: UploadCompletion, owner: Owner, state: State) -> None:
    """Verified by reading the stored bytes: in transactions of its own,
    none held while they are read."""
    complete_upload(state.sessions, state.storage, owner, body)
