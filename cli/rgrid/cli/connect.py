"""Which API a command talks to: the configured remote, or the local grid."""

from __future__ import annotations

from rgrid.cli.local import start_local_grid
from rgrid.client import Client
from rgrid.config import Target, env_api_key, remote_target, rgrid_home
from rgrid.errors import Unreachable
from rgrid.local.grid import LocalGrid


def connect(start_local: bool) -> Client:
    """A client for the remote API if one is configured; otherwise for the
    local grid, started first when `start_local` (as `rgrid run` does)."""
    home = rgrid_home()
    target = remote_target(home)
    if target is not None:
        return Client(target)
    grid = LocalGrid(home)
    if not grid.running():
        if not start_local:
            raise Unreachable(
                "no remote API configured and the local grid is not running (start it with `rgrid local up`)"
            )
        start_local_grid(grid)
    local = grid.target()
    # A key the user set is the one used, so a wrong one is refused (77)
    # instead of being silently replaced by the grid's own.
    return Client(Target(api_url=local.api_url, api_key=env_api_key() or local.api_key))
