"""The exact package set of an environment: `name==version` of every
distribution installed in it, the lock an execution's provenance records
and `rgrid retry --exact` installs again.

It is read from the names of the metadata directories alone
(`<name>-<version>.dist-info`, `<name>-<version>[-pyX.Y].egg-info`), never
from their contents: an environment was built by a tenant's requirements,
and the runner reads nothing a build wrote beyond a directory listing. A
listing costs a fraction of a millisecond, where `pip freeze` would start
an interpreter for every attempt.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

from rgrid.wire import LOCKED_PACKAGE_PATTERN

# Where an environment keeps its distributions: a venv or a Python's own
# tree, and Debian's system Python.
SITE_GLOBS = ("lib/python3*/site-packages", "lib/python3/dist-packages", "lib/python3*/dist-packages")
_LOCKED = re.compile(LOCKED_PACKAGE_PATTERN)


def canonical_name(name: str) -> str:
    """PEP 503's normal form: one spelling per project."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _locked(entry: str) -> str | None:
    """`name==version` from a metadata directory's name, or None."""
    if entry.endswith(".dist-info"):
        name, _, version = entry.removesuffix(".dist-info").rpartition("-")
    elif entry.endswith(".egg-info"):
        parts = entry.removesuffix(".egg-info").split("-")
        if len(parts) < 2:
            return None
        name, version = parts[0], parts[1]
    else:
        return None
    line = f"{canonical_name(name)}=={version.replace('_', '-')}"
    return line if name and _LOCKED.match(line) else None


def installed(prefix: Path) -> list[str]:
    """Every distribution under `prefix`, sorted and one line per name.
    Links are not followed: a build decides every name in its tree."""
    found: dict[str, str] = {}
    for pattern in SITE_GLOBS:
        for site in sorted(prefix.glob(pattern)):
            if site.is_symlink() or not site.is_dir():
                continue
            with os.scandir(site) as entries:
                for entry in entries:
                    if not entry.is_dir(follow_symlinks=False):
                        continue
                    line = _locked(entry.name)
                    if line is not None:
                        found.setdefault(line.partition("==")[0], line)
    return [found[name] for name in sorted(found)]


@functools.cache
def interpreter_packages(prefix: str) -> tuple[str, ...]:
    """A node's own interpreter's packages, read once per process: only an
    operator changes them, by installing on the node."""
    return tuple(installed(Path(prefix)))
