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
    """The files an import of `parts` loads from `base`: each package's
    __init__.py on the way and the module itself; [] if it is not there."""
    files: list[Path] = []
    here = base
    for i, part in enumerate(parts):
        if not part.isidentifier():
            return files
        module = here / f"{part}.py"
        package = here / part
        if package.is_dir():
            init = package / "__init__.py"
            if init.is_file():
                files.append(init)
            here = package
            continue
        if module.is_file():
            files.append(module)
        # A module's attributes (`from helper import f`) are not files.
        return files if i == len(parts) - 1 or module.is_file() else []
    return files


def local_imports(script: Path) -> LocalImports:
    """Every module file the script imports from its folder, transitively."""
    script = script.resolve()
    root = script.parent
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
                found = found.resolve()
                if found in seen or not found.is_relative_to(root):
                    continue
                seen.add(found)
                result.files.append(found)
                queue.append(found)
                if len(result.files) > MAX_MODULES:
                    result.notes.append(f"more than {MAX_MODULES} local modules: the rest are not shipped")
                    return result
    result.files.sort()
    return result
