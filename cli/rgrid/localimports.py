"""The script's own modules: what it imports from its folder, transitively.

Python puts the script's folder first on sys.path, so `import helper` finds
helper.py beside the script before anything installed. On the grid the
script runs unmodified, so those files must travel with it. They are found
by reading the import statements (the script is never run here): absolute
imports resolved against the script's folder, relative ones against their
package, then the same for every module found. A name that does not
resolve there is the standard library's or an installed package's, and is
left alone. Imports made at run time (importlib, __import__) cannot be
seen: `--include` ships those.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

from rgrid.errors import UsageError

MAX_MODULES = 2_000


@dataclass
class LocalImports:
    """The module files found (the script excluded), and a note per file
    whose imports could not be read."""

    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _imported_names(tree: ast.AST, module_file: Path, root: Path) -> list[tuple[Path, list[str]]]:
    """(where to resolve from, dotted name) for every import statement."""
    found: list[tuple[Path, list[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(root, alias.name.split(".")) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module_file.parent
                for _ in range(node.level - 1):
                    base = base.parent
            else:
                base = root
            module = node.module.split(".") if node.module else []
            if module:
                found.append((base, module))
            # `from pkg import sub` may name a submodule.
            found += [(base, [*module, alias.name]) for alias in node.names if alias.name != "*"]
    return found


def _resolve(base: Path, parts: list[str]) -> list[Path]:
    """The files an import of `parts` loads from `base`, in Python's order
    within one folder: a package (with __init__.py), else a module file,
    else a plain folder (a namespace package); each package's __init__.py
    on the way, and the module itself. [] if nothing of it is there."""
    files: list[Path] = []
    here = base
    for part in parts:
        if not part.isidentifier():
            return files
        package, module = here / part, here / f"{part}.py"
        if (package / "__init__.py").is_file():
            files.append(package / "__init__.py")
            here = package
        elif module.is_file():
            # The rest (`from helper import f`) names its attributes.
            return [*files, module]
        elif package.is_dir():
            here = package
        else:
            return files
    return files


def local_imports(script: Path) -> LocalImports:
    """Every module file the script imports from its folder, transitively,
    by the path Python finds it at (a symlinked module keeps its name; what
    it points to is what travels)."""
    script = script.resolve()
    root = script.parent  # as sys.path[0]: the script's real folder
    result = LocalImports()
    seen = {script}
    queue = [script]
    while queue:
        current = queue.pop()
        try:
            tree = ast.parse(current.read_bytes(), filename=str(current))
        except (SyntaxError, ValueError, OSError) as exc:
            result.notes.append(
                f"{current}: not read as Python ({exc.__class__.__name__}); its imports are not followed"
            )
            continue
        for base, parts in _imported_names(tree, current, root):
            for found in _resolve(base, parts):
                real = found.resolve()
                if real in seen or not found.is_relative_to(root):
                    continue
                seen.add(real)
                result.files.append(found)
                queue.append(found)
                if len(result.files) > MAX_MODULES:
                    raise UsageError(
                        f"the script imports more than {MAX_MODULES} modules from its folder: "
                        "ship what it needs with --include, and --no-auto-include"
                    )
    result.files.sort()
    return result
