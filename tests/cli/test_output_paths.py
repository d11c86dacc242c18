"""Outputs can only land inside the output dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from rgrid.errors import UsageError
from rgrid.transfer import output_target


@pytest.mark.parametrize("bad", ["../x", "/etc/passwd", "a/../../x", "", "a\x00b"])
def test_escaping_paths_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(UsageError, match="refusing output path"):
        output_target(tmp_path, bad)


def test_symlinked_folder_pointing_outside_is_refused(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "link").symlink_to(tmp_path)
    with pytest.raises(UsageError):
        output_target(dest, "link/x.txt")


def test_normal_paths(tmp_path: Path) -> None:
    assert output_target(tmp_path, "a/b.txt") == tmp_path / "a" / "b.txt"
