"""Which arguments are local files, and where each lands in the work dir.

The work dir mirrors the current directory: a file at ./data/x.csv is at
data/x.csv remotely, so relative paths in arguments and in the script mean
the same thing as locally, and two files with the same base name from
different folders can never collide. A file outside the current directory
goes to _rgrid/ext/N/<name> and its argument is rewritten to that path.
A directory argument is shipped as a tree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from rgrid.errors import UsageError
from rgrid.localimports import local_imports

EXTERNAL_ROOT = "_rgrid/ext"
MAX_TREE_FILES = 10_000


@dataclass(frozen=True)
class LocalFile:
    local: Path
    remote: str
    size: int


@dataclass
class ArgUse:
    """How one argument was understood, for --dry-run."""

    original: str
    rewritten: str
    files: list[LocalFile]


@dataclass
class RunPlan:
    script: LocalFile
    args: list[str]
    uses: list[ArgUse]
    files: list[LocalFile] = field(default_factory=list)
    # The script's own modules (rgrid.localimports), and why some were not followed.
    modules: list[LocalFile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def inputs(self) -> list[LocalFile]:
        return [f for f in self.files if f.remote != self.script.remote]


class _Layout:
    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.external: dict[Path, str] = {}
        self.files: dict[str, LocalFile] = {}

    def remote_of(self, path: Path) -> str:
        absolute = Path(os.path.abspath(path))
        try:
            rel = absolute.relative_to(self.cwd)
        except ValueError:
            return self._external(absolute)
        if not rel.parts:
            return self._external(absolute)
        return PurePosixPath(*rel.parts).as_posix()

    def _external(self, absolute: Path) -> str:
        if absolute not in self.external:
            self.external[absolute] = f"{EXTERNAL_ROOT}/{len(self.external) + 1}/{absolute.name or 'root'}"
        return self.external[absolute]

    def add(self, local: Path, remote: str) -> LocalFile:
        if not os.access(local, os.R_OK):
            raise UsageError(f"cannot read {local}")
        entry = LocalFile(local=local, remote=remote, size=local.stat().st_size)
        self.files.setdefault(remote, entry)
        return entry

    def add_path(self, path: Path) -> tuple[str, list[LocalFile]]:
        remote = self.remote_of(path)
        if path.is_dir():
            return remote, self._add_tree(path, remote)
        return remote, [self.add(path, remote)]

    def _add_tree(self, root: Path, remote_root: str) -> list[LocalFile]:
        added = []
        for dirpath, _dirs, names in os.walk(root):
            for name in sorted(names):
                local = Path(dirpath) / name
                if not local.is_file():
                    continue
                rel = PurePosixPath(*local.relative_to(root).parts).as_posix()
                added.append(self.add(local, f"{remote_root}/{rel}"))
                if len(added) > MAX_TREE_FILES:
                    raise UsageError(f"{root} holds more than {MAX_TREE_FILES} files; ship less")
        return added


def _names_local_path(value: str) -> bool:
    return bool(value) and value != "-" and os.path.exists(value)


def plan_run(
    script: str, args: list[str], includes: list[str], cwd: Path | None = None, auto_include: bool = True
) -> RunPlan:
    """Classify arguments and lay out every file the run needs: with
    `auto_include`, the modules the script imports from its folder too."""
    layout = _Layout(Path(os.path.abspath(cwd or Path.cwd())))
    script_path = Path(script)
    if not script_path.exists():
        raise UsageError(f"script not found: {script}")
    if not script_path.is_file():
        raise UsageError(f"script is not a file: {script}")
    script_file = layout.add(script_path, layout.remote_of(script_path))
    uses = []
    rewritten = []
    for arg in args:
        flag, eq, value = arg.partition("=")
        if arg.startswith("-") and eq and _names_local_path(value):
            remote, files = layout.add_path(Path(value))
            new = f"{flag}={remote}"
        elif _names_local_path(arg):
            remote, files = layout.add_path(Path(arg))
            new = remote
        else:
            files, new = [], arg
        uses.append(ArgUse(original=arg, rewritten=new, files=files))
        rewritten.append(new)
    for inc in includes:
        if not os.path.exists(inc):
            raise UsageError(f"--include: no such file or directory: {inc}")
        layout.add_path(Path(inc))
    modules, notes = _script_modules(layout, script_path, script_file) if auto_include else ([], [])
    return RunPlan(
        script=script_file,
        args=rewritten,
        uses=uses,
        files=list(layout.files.values()),
        modules=modules,
        notes=notes,
    )


def _script_modules(
    layout: _Layout, script: Path, script_file: LocalFile
) -> tuple[list[LocalFile], list[str]]:
    """The script's modules, placed where the script's folder lands, so
    that they sit beside it remotely as they do here."""
    found = local_imports(script)
    folder = script.resolve().parent
    remote_folder = PurePosixPath(script_file.remote).parent
    modules = [
        layout.add(module, (remote_folder / PurePosixPath(*module.relative_to(folder).parts)).as_posix())
        for module in found.files
    ]
    return modules, found.notes
