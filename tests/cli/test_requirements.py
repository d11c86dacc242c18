"""Requirement lines a tenant may give, and the ones that would reach the
node: refused by the CLI before anything is uploaded (exit 2, one line
naming the line), and by the API's wire model for a hand-made request."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from rgrid.requirements import RefusedRequirement, check_requirements
from rgrid.wire import ExecutionCreate, InputFile

ACCEPTED = """\
# a comment
numpy>=1.26,<3
pandas[parquet] == 2.2.*   # pinned
tomli; python_version < "3.11"
mypkg @ https://example.org/mypkg-1.0.tar.gz#sha256=abc
"""

REFUSED = [
    "-r /etc/shadow",
    "--requirement=other.txt",
    "-c constraints.txt",
    "-e /srv/project",
    "--editable git+https://x/y",
    "--index-url http://10.0.0.5/simple",
    "--extra-index-url https://evil.example/simple",
    "--find-links /opt/wheels",
    "-f https://evil.example/",
    "--trusted-host evil.example",
    "pkg @ file:///var/lib/rgrid/secret",
    "pkg @ http://10.0.0.5/pkg.tar.gz",
    "pkg @ git+ssh://git@github.com/x/y",
    "./local/package",
    "/abs/path/to/pkg.whl",
    "../up.tar.gz",
    "pkg @ https://${SECRET}/x.tar.gz",
    "pkg \\",
    "requests\xa0# -r /etc/shadow",
    "requests\x0c-r /etc/shadow",
    "numpy\u2028-e /srv",
]


def test_package_lines_are_accepted() -> None:
    assert check_requirements(ACCEPTED) == ACCEPTED


@pytest.mark.parametrize("line", REFUSED)
def test_lines_that_reach_the_node_are_refused(line: str) -> None:
    text = f"numpy\n\n{line}\n"
    with pytest.raises(RefusedRequirement, match=r"^requirements line 3[ :]") as caught:
        check_requirements(text)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("line", REFUSED[:3] + REFUSED[10:12])
def test_the_api_refuses_them_too(line: str) -> None:
    script = InputFile(sha256="0" * 64, path="s.py")
    with pytest.raises(ValidationError, match="requirements line 1"):
        ExecutionCreate(script=script, requirements=line + "\n")
    with pytest.raises(ValidationError, match="environment variable name"):
        ExecutionCreate(script=script, env={"BAD-NAME": "x"})


@pytest.mark.parametrize(
    "line", ["-r /etc/shadow", "pkg @ file:///etc/passwd", "--index-url http://10.1.1.1/"]
)
def test_the_cli_refuses_before_uploading(tmp_path: Path, line: str) -> None:
    """No API is configured or reachable: the refusal comes first, as exit 2
    and one line."""
    (tmp_path / "s.py").write_text("print(1)\n")
    (tmp_path / "requirements.txt").write_text(f"{line}\n")
    env = {
        "RGRID_HOME": str(tmp_path / "home"),
        "RGRID_API_URL": "http://127.0.0.1:9",
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run(
        [sys.executable, "-m", "rgrid", "run", "s.py"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "requirements line 1" in lines[0] and "requirements.txt" in lines[0], lines
