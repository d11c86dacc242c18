"""Root hands Ray its temp dir without ever following what the Ray user
may have left there."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from rgrid_runner.rayuser import give_dir, inherited_by_ray, ray_account

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="handing a directory to another user needs root")


def test_a_symlink_in_place_of_the_temp_dir_is_replaced_not_followed(tmp_path: Path) -> None:
    account = ray_account("rgrid-ray")
    assert account is not None
    victim = tmp_path / "etc"
    victim.mkdir(mode=0o755)
    (victim / "shadow").write_text("root:secret")
    temp = tmp_path / "ray"
    temp.symlink_to(victim)
    give_dir(account, temp)
    assert (victim.stat().st_uid, stat.S_IMODE(victim.stat().st_mode)) == (0, 0o755)
    assert (victim / "shadow").stat().st_uid == 0
    st = os.lstat(temp)
    assert stat.S_ISDIR(st.st_mode) and st.st_uid == account.uid and stat.S_IMODE(st.st_mode) == 0o700


def test_a_temp_dir_an_earlier_root_ray_left_is_made_anew(tmp_path: Path) -> None:
    account = ray_account("rgrid-ray")
    assert account is not None
    temp = tmp_path / "ray"
    (temp / "session_old").mkdir(parents=True)
    (temp / "session_latest").symlink_to("/etc")
    give_dir(account, temp)
    assert list(temp.iterdir()) == [] and temp.stat().st_uid == account.uid
    give_dir(account, temp)  # the Ray user's own: kept as it is
    assert temp.stat().st_uid == account.uid


def test_ray_inherits_only_an_allow_list_of_variables() -> None:
    kept = inherited_by_ray(
        {
            "PATH": "/usr/bin",
            "RAY_AUTH_MODE": "token",
            "LC_ALL": "C",
            "PGPASSWORD": "x",
            "AWS_SECRET_ACCESS_KEY": "y",
        }
    )
    assert kept == {"PATH": "/usr/bin", "RAY_AUTH_MODE": "token", "LC_ALL": "C"}
