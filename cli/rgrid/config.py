"""Where the CLI keeps its state and which API it talks to.

RGRID_HOME (default ~/.rgrid) holds config.json (the remote API URL set by
`rgrid init`), credentials.json (the API key, mode 0600) and local/ (the
embedded grid). RGRID_API_URL and RGRID_API_KEY override both.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path


def rgrid_home() -> Path:
    return Path(os.environ.get("RGRID_HOME") or Path.home() / ".rgrid").expanduser()


@dataclass(frozen=True)
class Target:
    api_url: str
    api_key: str


def write_private(path: Path, data: dict) -> None:
    """Write JSON readable by the owner only."""
    write_private_text(path, json.dumps(data, indent=2))


def write_private_text(path: Path, text: str) -> None:
    """Write a file readable by the owner only, created with 0600 from the
    start and renamed into place, so no reader sees it half-written."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}


def env_api_key() -> str | None:
    """RGRID_API_KEY overrides every stored key, the local grid's included."""
    return os.environ.get("RGRID_API_KEY") or None


def remote_target(home: Path) -> Target | None:
    """The configured remote API, or None when the local grid should be used."""
    url = os.environ.get("RGRID_API_URL") or read_json(home / "config.json").get("api_url")
    if not url:
        return None
    key = env_api_key() or read_json(home / "credentials.json").get("api_key", "")
    return Target(api_url=url.rstrip("/"), api_key=key)


def save_remote(home: Path, api_url: str, api_key: str) -> None:
    write_private(home / "config.json", {"api_url": api_url.rstrip("/")})
    write_private(home / "credentials.json", {"api_key": api_key})
