"""Output folders and the cache folder are checked before any work: a folder that cannot be written is one line."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from optikit._places import require_output_dir, require_writable_home, write_problem
from optikit.errors import ConfigError

AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def test_require_output_dir_refuses_a_path_through_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("a-file").write_text("not a folder")
    with pytest.raises(ConfigError) as refused:
        require_output_dir(Path("a-file/sub"))
    assert str(refused.value) == "--out a-file/sub: a-file is a file, not a folder; pass a folder path"


def test_require_output_dir_refuses_a_path_deep_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    assert write_problem(tmp_path / "a-file" / "x" / "y") == f"{tmp_path / 'a-file'} is a file, not a folder"


def test_require_output_dir_accepts_a_missing_folder_and_creates_nothing(tmp_path: Path) -> None:
    target = tmp_path / "new" / "run"
    assert require_output_dir(target) == target
    assert list(tmp_path.iterdir()) == []  # the probe file is gone and no folder was made


def test_require_output_dir_accepts_an_existing_folder_and_leaves_it_as_it_was(tmp_path: Path) -> None:
    (tmp_path / "kept.txt").write_text("x")
    require_output_dir(tmp_path, "out")
    assert [p.name for p in tmp_path.iterdir()] == ["kept.txt"]


def test_require_output_dir_refuses_a_folder_that_takes_no_new_file(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # Root ignores permission bits, so the refusal of the probe file is simulated the way the kernel reports it.
    def refused(*args: object, **kwargs: object) -> tuple[int, str]:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refused)
    with pytest.raises(ConfigError, match=r"^out .*/run: .* is not writable \(Permission denied\); pass a folder you "
                                          r"can write to$"):
        require_output_dir(tmp_path / "run", "out")


@pytest.mark.skipif(AS_ROOT, reason="root ignores permission bits")
def test_require_output_dir_refuses_a_read_only_folder(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        with pytest.raises(ConfigError, match="is not writable"):
            require_output_dir(locked / "run")
    finally:
        locked.chmod(0o755)


def test_require_writable_home_names_optikit_home_and_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a-file").write_text("")
    home = tmp_path / "a-file" / "home"
    monkeypatch.setenv("OPTIKIT_HOME", str(home))
    with pytest.raises(ConfigError) as refused:
        require_writable_home(home)
    assert str(refused.value) == (f"OPTIKIT_HOME={home} is not writable: {tmp_path / 'a-file'} is a file, not a "
                                  "folder; set OPTIKIT_HOME to a writable folder")


def test_require_writable_home_names_the_default_cache_when_optikit_home_is_unset(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a-file").write_text("")
    monkeypatch.delenv("OPTIKIT_HOME", raising=False)
    with pytest.raises(ConfigError, match=r"^the cache folder .* \(OPTIKIT_HOME unset\) is not writable: .*; set "
                                          r"OPTIKIT_HOME to a writable folder$"):
        require_writable_home(tmp_path / "a-file" / "cache")
