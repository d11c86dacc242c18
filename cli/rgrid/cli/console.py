"""Rich consoles: rgrid's own messages go to stderr so that stdout carries
only the script's output (or JSON with --json)."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


class LazyConsole:
    """A Rich console made on first use. A script that succeeds under
    `rgrid run` prints nothing of rgrid's own, and importing Rich is about
    15 ms of a start-up every run pays."""

    def __init__(self, stderr: bool) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    @property
    def rich(self) -> Console:
        """The console itself, for Rich's widgets (progress bars, prompts)."""
        if self._console is None:
            from rich.console import Console

            console = Console(stderr=self._stderr, highlight=False, soft_wrap=True)
            if not console.is_terminal:
                # Piped: plain, and a table's row is one line, whole, for grep and awk.
                console.width = PIPED_WIDTH
            self._console = console
        return self._console

    @property
    def is_terminal(self) -> bool:
        return self.rich.is_terminal

    def print(self, *objects: Any, **options: Any) -> None:
        self.rich.print(*objects, **options)


PIPED_WIDTH = 4096
err = LazyConsole(stderr=True)
out = LazyConsole(stderr=False)


def as_text(message: str) -> str:
    """A message with a user's words in it (paths, `[tool.rgrid]`), made
    safe to print with markup around it: its brackets stay brackets."""
    from rich.markup import escape

    return escape(message)


def say(message: str) -> None:
    """One line of rgrid's own on stderr; the message is text, never markup."""
    err.print(f"[dim]rgrid:[/dim] {as_text(message)}", highlight=False)


def print_json(value: BaseModel | dict | list) -> None:
    data = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
    sys.stdout.write(json.dumps(data, indent=2) + "\n")
    sys.stdout.flush()


def make_table(*columns: str) -> Table:
    """A borderless table for a reading command; rich.table is imported only
    by the commands that print one (it is not on `rgrid run`'s path). On a
    narrow terminal its cells wrap between words and fold a word too long
    for its column: nothing is cut off."""
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table
