"""This node's copy of the grid's Ray token.

The agent is given it by `RAY_AUTH_TOKEN_PATH` (a file only root reads) or
`RAY_AUTH_TOKEN`. It hands it to each raylet it starts by value (the Ray
user cannot read root's file), and uses it itself to ask the GCS about its
node. When the grid rotates its token (`rgrid_api.raytoken`), the agent
fetches the new one, keeps it here, and starts its next raylet with it.
It writes it to the token file too, so that a restarted agent starts on it;
a file it may not write (a read-only compose secret) keeps the old token,
and a restarted agent is moved to the new one again by the API's answer.
"""

from __future__ import annotations

import logging
import os
from collections.abc import MutableMapping
from pathlib import Path

from rgrid.config import write_private_text
from rgrid.wire import ray_token_fingerprint
from rgrid_runner.ray_compat import reload_ray_token

log = logging.getLogger(__name__)

PATH_VARIABLE = "RAY_AUTH_TOKEN_PATH"
VALUE_VARIABLE = "RAY_AUTH_TOKEN"


class NodeRayToken:
    def __init__(self, environ: MutableMapping[str, str] = os.environ) -> None:
        self._environ = environ
        path = environ.get(PATH_VARIABLE)
        self.path = Path(path) if path else None
        self._fetched: str | None = None

    @property
    def value(self) -> str | None:
        if self._fetched is not None:
            return self._fetched
        if self.path is not None and self.path.is_file():
            return self.path.read_text().strip()
        return self._environ.get(VALUE_VARIABLE)

    @property
    def fingerprint(self) -> str | None:
        value = self.value
        return ray_token_fingerprint(value) if value else None

    def replace(self, token: str) -> None:
        """Use a new token from now on, here and in this process's Ray
        client (which reads `RAY_AUTH_TOKEN` before any file)."""
        self._fetched = token
        self._environ[VALUE_VARIABLE] = token
        reload_ray_token()
        if self.path is not None:
            try:
                kept = self.path.stat() if self.path.exists() else None
                write_private_text(self.path, token)
                if kept is not None:  # a token file shared with a server keeps its owner
                    os.chown(self.path, kept.st_uid, kept.st_gid)
                    self.path.chmod(kept.st_mode & 0o777)
            except OSError as exc:
                log.warning("cannot keep the new Ray token in %s (%s): kept in memory", self.path, exc)
