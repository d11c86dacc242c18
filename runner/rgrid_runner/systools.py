"""The system programs that privileged steps start, found without PATH.

A step that runs as root (bubblewrap, setpriv, nsenter, ip, nft, prlimit)
must never take its program from a PATH that someone else set: not the
job's, not the runner's. Each is named by absolute path, from the system's
own directories, and started with a fixed environment.
"""

from __future__ import annotations

import os

SYSTEM_BIN = ("/usr/bin", "/bin", "/usr/sbin", "/sbin")
# The PATH of every process rgrid starts that the tenant did not configure.
SYSTEM_PATH = "/usr/bin:/bin"
# The whole environment of every step that runs with privilege.
PRIVILEGED_ENV = {"PATH": f"{SYSTEM_PATH}:/usr/sbin:/sbin", "LANG": "C.UTF-8"}


def system_tool(name: str) -> str:
    """The absolute path of a system program; FileNotFoundError if it is
    not installed in the system's directories."""
    for directory in SYSTEM_BIN:
        path = os.path.join(directory, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise FileNotFoundError(f"{name} is not installed in {', '.join(SYSTEM_BIN)}")


def found(name: str) -> str | None:
    """system_tool, or None where the program is missing."""
    try:
        return system_tool(name)
    except FileNotFoundError:
        return None
