"""atomic_directory: concurrent writers of one target both succeed and leave one whole copy; dead writers' partial
folders are removed, live writers' never."""
from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from optikit._io import atomic_directory, remove_stale_partials

ROUNDS = 100
PARTS = ("weights.bin", "config.json", "variant.json")


def _writer(root: str, me: str, mode: str, barrier: Any) -> None:
    """Writes the same ROUNDS targets as its twin; both wait at the barrier so their renames race every round."""
    if mode == "replace-without-atomic-swap":  # as on a system without renameat2: the copy is moved aside first
        import optikit._io

        optikit._io._exchange = lambda a, b: False  # type: ignore[assignment]
    replace = mode != "keep-first"
    for i in range(ROUNDS):
        with atomic_directory(Path(root) / f"v{i}", replace=replace) as tmp:
            for part in PARTS:
                (tmp / part).write_text(me)
            barrier.wait(timeout=30)


def _one_whole_copy(target: Path) -> bool:
    files = sorted(p.name for p in target.iterdir())
    return files == sorted(PARTS) and len({(target / p).read_text() for p in PARTS}) == 1


@pytest.mark.parametrize("mode", ["replace", "replace-without-atomic-swap", "keep-first"])
def test_two_writers_of_one_target_both_succeed_and_leave_one_whole_copy(tmp_path: Path, mode: str) -> None:
    spawn = multiprocessing.get_context("spawn")  # no fork of a process that may hold torch's threads
    barrier = spawn.Barrier(2)
    writers = [spawn.Process(target=_writer, args=(str(tmp_path), me, mode, barrier)) for me in ("a", "b")]
    for w in writers:
        w.start()
    for w in writers:
        w.join(timeout=120)
    assert [w.exitcode for w in writers] == [0, 0]  # neither writer raised (FileExistsError, ENOTEMPTY, ENOENT)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"v{i}" for i in range(ROUNDS))  # no leftovers
    assert all(_one_whole_copy(tmp_path / f"v{i}") for i in range(ROUNDS))


def test_replacing_an_existing_target_swaps_in_the_new_copy_and_leaves_nothing_else(tmp_path: Path) -> None:
    target = tmp_path / "v"
    for content in ("old", "new"):
        with atomic_directory(target, replace=True) as tmp:
            (tmp / "f").write_text(content)
    assert (target / "f").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["v"]


def test_without_replace_an_existing_copy_is_kept_and_the_new_one_dropped(tmp_path: Path) -> None:
    target = tmp_path / "v"
    for content in ("first", "second"):
        with atomic_directory(target) as tmp:
            (tmp / "f").write_text(content)
    assert (target / "f").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["v"]


def test_a_failed_block_publishes_nothing_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_directory(tmp_path / "v") as tmp:
        (tmp / "f").write_text("half")
        raise RuntimeError("the pass failed")
    assert list(tmp_path.iterdir()) == []


KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from optikit._io import atomic_directory

with atomic_directory(Path(sys.argv[1])) as tmp:
    (tmp / "half").write_text("written before the kill")
    os.kill(os.getpid(), signal.SIGKILL)  # kill -9 mid-write: no finally runs
"""

LIVE_WRITER = """
import sys, time
from pathlib import Path
from optikit._io import atomic_directory

with atomic_directory(Path(sys.argv[1])) as tmp:
    print("writing", flush=True)
    time.sleep(60)
"""


def test_a_partial_folder_of_a_killed_writer_is_removed_by_the_next_writer(tmp_path: Path) -> None:
    target = tmp_path / "v"
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(target)], check=False)
    assert proc.returncode == -signal.SIGKILL
    [partial] = [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    with atomic_directory(target) as tmp:
        (tmp / "f").write_text("whole")
    assert not partial.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["v"]


def test_a_partial_folder_of_a_live_writer_is_never_removed(tmp_path: Path) -> None:
    target = tmp_path / "v"
    proc = subprocess.Popen([sys.executable, "-c", LIVE_WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "writing\n"
        [partial] = [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
        assert remove_stale_partials(target) == []
        with atomic_directory(target) as tmp:
            (tmp / "f").write_text("mine")
        assert partial.is_dir()
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="process start times are read from /proc")
def test_a_partial_folder_older_than_the_process_now_holding_its_pid_is_removed(tmp_path: Path) -> None:
    # A dead writer's pid, reused by a later process: a fresh process stands in, and the folder is dated a day
    # before it started.
    from optikit._io import _HOST_TAG

    target = tmp_path / "v"
    stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        partial = tmp_path / f".v.{_HOST_TAG}-{stand_in.pid}.0123456789ab.partial"
        partial.mkdir()
        day_ago = time.time() - 86400
        os.utime(partial, (day_ago, day_ago))
        assert remove_stale_partials(target) == [partial]
    finally:
        stand_in.kill()
        stand_in.wait()
