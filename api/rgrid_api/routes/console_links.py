"""One-time login links to the web console, for an API key (`rgrid
console`): the key is the credential, and the link carries it into a
browser without the key itself ever appearing in a URL."""

from __future__ import annotations

from fastapi import APIRouter

from rgrid.wire import ConsoleLink
from rgrid_api.console.logins import new_link
from rgrid_api.deps import DB, State, User

router = APIRouter(prefix="/v1/console", tags=["console"])


@router.post("/link", response_model=ConsoleLink, status_code=201)
def link(caller: User, session: DB, state: State) -> ConsoleLink:
    """A link that logs a browser in as this key's owner: usable once, for
    RGRID_CONSOLE_LINK_S seconds (60)."""
    token = new_link(session, caller.key_id, state.settings.console_link_s)
    session.commit()
    return ConsoleLink(path=f"/ui/login/{token}", expires_in_s=state.settings.console_link_s)
