"""`rgrid run` starts fast: its path never imports the server side or its
heavy dependencies (Ray alone costs seconds)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = (
    "typer",
    "ray",
    "sqlalchemy",
    "fastapi",
    "uvicorn",
    "hcloud",
    "rgrid_api",
    "rgrid_runner",
    "rgrid_infra",
    # Reading installed packages' metadata (--version asks for it only).
    "importlib.metadata",
    # Rich is imported when rgrid first prints a message of its own; a run
    # that succeeds prints none.
    "rich",
)


def test_the_run_path_imports_nothing_heavy() -> None:
    code = (
        "import sys, json\n"
        "sys.modules.setdefault('httpx._main', None)\n"  # as rgrid.cli.entry does
        "import rgrid.cli.main, rgrid.cli.run, rgrid.transfer, rgrid.inputs, rgrid.follow, rgrid.client\n"
        "rgrid.cli.main.build_parser(with_plugins=False)\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
