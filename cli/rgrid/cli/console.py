"""Rich consoles: rgrid's own messages go to stderr so that stdout carries
only the script's output (or JSON with --json)."""

from __future__ import annotations

import json
import sys

from pydantic import BaseModel
from rich.console import Console

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


def say(message: str) -> None:
    err.print(f"[dim]rgrid:[/dim] {message}")


def print_json(value: BaseModel | dict | list) -> None:
    data = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
    sys.stdout.write(json.dumps(data, indent=2) + "\n")
    sys.stdout.flush()
