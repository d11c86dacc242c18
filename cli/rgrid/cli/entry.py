"""The first code of every `rgrid` call (the console script and `python -m
rgrid`).

The CLI's start-up time is part of every run. Python caches compiled
modules (.pyc) in the environment on first import, except where
PYTHONDONTWRITEBYTECODE is set (some images and CI machines set it
globally): there every call would compile rich, httpx and pydantic
again, about 0.3 s. So the CLI lets its own imports be cached regardless.
This replaces uv's `compile-bytecode`, which recompiles the whole
environment (thousands of files) on every `uv run`.

httpx imports its own command-line tool when it is imported (click,
pygments, rich.syntax and rich.progress: about 15 ms here); rgrid never uses
it, and a module marked missing makes httpx skip it.
"""

from __future__ import annotations

import sys


def main() -> None:
    sys.dont_write_bytecode = False
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    from rgrid.cli.main import main as run

    run()
