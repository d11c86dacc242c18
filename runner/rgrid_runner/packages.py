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

import fnmatch
import functools
import os
import re
from pathlib import Path

from rgrid.wire import LOCKED_PACKAGE_PATTERN

# Where an environment keeps its distributions, below its prefix: a venv
# or a Python's own tree, and Debian's system Python.
SITE_DIRS = ("site-packages", "dist-packages")
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


def _real_dirs(parent: Path, match: str) -> list[Path]:
    """Directories (never links to one) in `parent` whose names match."""
    try:
        with os.scandir(parent) as entries:
            return sorted(
                Path(e.path)
                for e in entries
                if fnmatch.fnmatch(e.name, match) and e.is_dir(follow_symlinks=False)
            )
    except (FileNotFoundError, NotADirectoryError):
        return []


def installed(prefix: Path) -> list[str]:
    """Every distribution under `prefix` (`lib/python3*/site-packages`,
    `lib/python3*/dist-packages`), sorted and one line per name. No link
    is followed at any depth below `prefix`: a build decides every name in
    its tree."""
    found: dict[str, str] = {}
    for lib in _real_dirs(prefix, "lib"):
        for python in _real_dirs(lib, "python3*"):
            for site in (d for name in SITE_DIRS for d in _real_dirs(python, name)):
                for entry in _real_dirs(site, "*-info"):
                    line = _locked(entry.name)
                    if line is not None:
                        found.setdefault(line.partition("==")[0], line)
    return [found[name] for name in sorted(found)]


@functools.cache
def interpreter_packages(prefix: str) -> tuple[str, ...]:
    """A node's own interpreter's packages, read once per process: only an
    operator changes them, by installing on the node."""
    return tuple(installed(Path(prefix)))
