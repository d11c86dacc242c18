"""Rich consoles: rgrid's own messages go to stderr so that stdout carries
only the script's output (or JSON with --json)."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

from pydantic import BaseModel
from rich.console import Console

if TYPE_CHECKING:
    from rich.table import Table

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


def say(message: str) -> None:
    err.print(f"[dim]rgrid:[/dim] {message}")


def print_json(value: BaseModel | dict | list) -> None:
    data = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
    sys.stdout.write(json.dumps(data, indent=2) + "\n")
    sys.stdout.flush()


def make_table(*columns: str) -> Table:
    """A borderless table for a reading command; rich.table is imported only
    by the commands that print one (it is not on `rgrid run`'s path)."""
    from rich.table import Table

    return Table(*columns, box=None, pad_edge=False)
