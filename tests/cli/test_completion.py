"""Shell completion answers from rgrid's own parser, as bash asks it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def complete(line: str, tmp_path: Path) -> list[str]:
    """What bash's completion hook would offer for `line` (argcomplete's
    protocol, through the temp file its shell scripts may use)."""
    answer = tmp_path / "words"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RGRID_")},
        "_ARGCOMPLETE": "1",
        "_ARGCOMPLETE_SHELL": "bash",
        "_ARGCOMPLETE_STDOUT_FILENAME": str(answer),
        "COMP_LINE": line,
        "COMP_POINT": str(len(line)),
    }
    done = subprocess.run([sys.executable, "-m", "rgrid"], env=env, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return sorted(w.strip() for w in answer.read_text().split("\v") if w.strip())


def test_commands_and_options_complete(tmp_path: Path) -> None:
    assert complete("rgrid ru", tmp_path) == ["run"]
    assert complete("rgrid run --me", tmp_path) == ["--memory"]
    assert {"up", "down", "status"} <= set(complete("rgrid local ", tmp_path))


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_each_shell_gets_a_script(shell: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rgrid", "completion", shell], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "_ARGCOMPLETE" in done.stdout
