"""Which requirement lines a job may ask a worker to install.

A requirements file is read by the installer on a worker node, so every
line that names something of that node, or changes how the installer
behaves, is a way to reach the node: `-r /etc/shadow`, `-e /srv/x`,
`--index-url http://10.0.0.5/`, `pkg @ file:///var/lib/...`. Only what
names a package from outside is accepted: a name with extras, versions and
markers (PEP 508), or `name @ https://...`. The CLI checks before anything
is uploaded, and the API checks again (the wire model), so a hand-made
request gets the same answer. The operator points nodes at an index of
their own with RGRID_PIP_INDEX_URL, never a tenant.
"""

from __future__ import annotations

import re

MAX_LINE = 4096
# pip and uv end a line at a `#` that follows white space (or starts it).
COMMENT = re.compile(r"(^|[ \t])#.*$")
# Printable ASCII and tabs only: Python and the installer then agree on
# where lines and comments end (no form feed, NEL, no-break space, ...).
PLAIN = re.compile(r"^[\t\x20-\x7e]*$")


class RefusedRequirement(ValueError):
    """A line of a requirements file that rgrid will not install."""


def _refusal(line: str) -> str | None:
    """Why this (non-empty, comment-free) line is refused, or None."""
    if line.startswith("-"):
        option = line.split()[0].split("=")[0]
        return f"installer options such as {option} are not accepted (the node's operator sets the index)"
    if "${" in line or "\\" in line:
        return "variables and line continuations are not accepted"
    # Imported here: the CLI's start-up does not pay for it when no file is read.
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        req = Requirement(line)
    except InvalidRequirement:
        return "not a package requirement (name[extras] versions ; markers, or name @ https://...)"
    if req.url is not None and not req.url.lower().startswith("https://"):
        return "a package URL must be https:// (no file:, local paths or other schemes)"
    return None


def check_requirements(text: str) -> str:
    """The text, unchanged, if every line may be installed; else
    RefusedRequirement naming the first refused line and why."""
    for number, raw in enumerate(text.replace("\r\n", "\n").split("\n"), start=1):
        if not PLAIN.match(raw):
            raise RefusedRequirement(
                f"requirements line {number}: only printable ASCII characters are accepted"
            )
        line = COMMENT.sub("", raw).strip(" \t")
        if not line:
            continue
        reason = "line too long" if len(line) > MAX_LINE else _refusal(line)
        if reason is not None:
            shown = line if len(line) <= 80 else line[:77] + "..."
            raise RefusedRequirement(f"requirements line {number} ({shown!r}): {reason}")
    return text
