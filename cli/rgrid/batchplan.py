"""A batch, planned on the laptop: which files the glob matches, the
arguments of each input's execution, which files every execution shares,
and the folder each input's outputs land in.

Each matched file is one execution of the same script. It replaces `{}`
wherever that appears in the arguments, or else is appended as the last
argument. Files the other arguments (and --include) name are shared by every
execution and uploaded once.
"""

from __future__ import annotations

import glob
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from rgrid.errors import UsageError
from rgrid.inputs import LocalFile, plan_run

PLACEHOLDER = "{}"
OUTSIDE = "_rgrid/ext"


@dataclass(frozen=True)
class BatchInput:
    label: str  # the input as the user sees it: its path relative to the current directory
    files: list[LocalFile]  # what only this execution gets
    args: list[str]  # its arguments, files rewritten to their work-dir paths


@dataclass(frozen=True)
class BatchPlan:
    script: LocalFile
    shared: list[LocalFile]
    inputs: list[BatchInput]
    # The script's own modules (among `shared`), and why some were not followed.
    modules: list[LocalFile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def files(self) -> list[LocalFile]:
        """Every distinct file to upload."""
        seen: dict[str, LocalFile] = {}
        for f in [self.script, *self.shared, *(f for i in self.inputs for f in i.files)]:
            seen.setdefault(str(f.local), f)
        return list(seen.values())


def uses_placeholder(args: list[str]) -> bool:
    return any(PLACEHOLDER in a for a in args)


def matches(pattern: str, cwd: Path) -> list[str]:
    """Files the glob matches, relative to `cwd` (`**` allowed), in order."""
    found = sorted(
        {os.path.normpath(m) for m in glob.glob(pattern, root_dir=cwd, recursive=True) if (cwd / m).is_file()}
    )
    if not found:
        raise UsageError(f"--batch {pattern!r} matches no file")
    return found


def item_args(args: list[str], value: str) -> list[str]:
    if uses_placeholder(args):
        return [a.replace(PLACEHOLDER, value) for a in args]
    return [*args, value]


def plan_batch(
    script: str, pattern: str, args: list[str], includes: list[str], cwd: Path, auto_include: bool = True
) -> BatchPlan:
    """The shared files (the script's modules among them) once, then each
    input's own files and arguments."""
    base = plan_run(script, [a for a in args if PLACEHOLDER not in a], includes, cwd, auto_include)
    shared_remotes = {f.remote for f in base.files}
    inputs = []
    for label in matches(pattern, cwd):
        plan = plan_run(script, item_args(args, label), includes, cwd, auto_include=False)
        own = [f for f in plan.files if f.remote not in shared_remotes]
        inputs.append(BatchInput(label=label, files=own, args=plan.args))
    shared = [f for f in base.files if f.remote != base.script.remote]
    return BatchPlan(script=base.script, shared=shared, inputs=inputs, modules=base.modules, notes=base.notes)


def output_folders(labels: list[str]) -> dict[str, str]:
    """Each input's folder under outputs/: its path without the extension
    (`data/a.csv` gives `data/a`). No two inputs ever share a folder, nor
    nest in each other's: where they would, the folder keeps the whole file
    name (`data/a.csv`), and a file outside the current directory goes under
    _rgrid/ext."""
    stems = {label: _stem(label) for label in labels}
    clashes = Counter(stems.values())
    folders = {label: stems[label] if clashes[stems[label]] == 1 else _inside(label) for label in labels}
    parents = {str(p) for f in folders.values() for p in PurePosixPath(f).parents}
    used: set[str] = set()
    result = {}
    for label in labels:
        folder = folders[label]
        if folder in parents:
            folder = _inside(label)
        while folder in used or folder in parents:
            folder += "~"
        used.add(folder)
        result[label] = folder
    return result


def _inside(label: str) -> str:
    """The label as a relative path that stays inside outputs/."""
    parts = PurePosixPath(label.replace(os.sep, "/")).parts
    if ".." in parts or PurePosixPath(label).is_absolute():
        return f"{OUTSIDE}/{parts[-1]}"
    return PurePosixPath(*parts).as_posix()


def _stem(label: str) -> str:
    path = PurePosixPath(_inside(label))
    return path.with_suffix("").as_posix() if path.suffix and path.stem else path.as_posix()
