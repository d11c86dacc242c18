"""Worker nodes started on this machine by the autoscaler's local provider:
one record per node in a folder (its name, labels, and the session its
processes run in). The provider creates and deletes them; `rgrid local
down` stops whatever is left."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from rgrid.config import read_json, write_private
from rgrid.local.procs import alive, session_members, stop_session


def record_path(nodes_dir: Path, name: str) -> Path:
    return nodes_dir / f"{name}.json"


def node_dir(nodes_dir: Path, name: str) -> Path:
    """The node's own files: its credential and its copy of the Ray token."""
    return nodes_dir / name


def records(nodes_dir: Path) -> list[dict]:
    out = []
    for path in sorted(nodes_dir.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("name"):
            data["alive"] = alive(data.get("pid"))
            out.append(data)
    return out


def write(nodes_dir: Path, record: dict) -> None:
    write_private(record_path(nodes_dir, record["name"]), record)


def remove(nodes_dir: Path, name: str) -> bool:
    """Stop the node's processes and forget it; False if there was none."""
    path = record_path(nodes_dir, name)
    record = read_json(path)
    if not record:
        return False
    pid = record.get("pid")
    if pid and session_members(pid):
        stop_session(pid)
    path.unlink(missing_ok=True)
    shutil.rmtree(node_dir(nodes_dir, name), ignore_errors=True)
    return True


def remove_all(nodes_dir: Path) -> list[str]:
    names = [r["name"] for r in records(nodes_dir)]
    for name in names:
        remove(nodes_dir, name)
    return names
