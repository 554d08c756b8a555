"""Cell ownership: a cell held by a live run is refused in one line naming the holder; a dead run's cell is taken
over; a cell process ends (with what it started) when the matrix process that started it dies."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from optikit.errors import OptikitError
from optikit.matrix.owner import lock_cell, read_owner
from optikit.matrix.runner import run_matrix
from optikit.matrix.spec import parse_matrix
from tests.process_helpers import running

HOLDER = """
import sys, time
from pathlib import Path
from optikit.matrix.owner import lock_cell

lock = lock_cell(Path(sys.argv[1]), "elsewhere")
print("holding", flush=True)
if sys.argv[2] == "die":
    import os, signal
    os.kill(os.getpid(), signal.SIGKILL)
time.sleep(60)
"""


def _hold(record: Path, then: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(record), then], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "holding\n"
    return proc


def test_a_cell_held_by_a_live_process_is_refused_naming_its_pid(tmp_path: Path) -> None:
    record = tmp_path / "g@cpu" / "onnx.json"
    holder = _hold(record, "sleep")
    try:
        with pytest.raises(OptikitError) as err:
            lock_cell(record, "g@cpu/onnx")
        message = str(err.value)
        assert f"cell g@cpu/onnx is being run by process {holder.pid}" in message and "--resume" in message
        assert "\n" not in message
    finally:
        holder.kill()
        holder.wait()


def test_a_cell_whose_owner_died_is_taken_over(tmp_path: Path) -> None:
    record = tmp_path / "g@cpu" / "onnx.json"
    holder = _hold(record, "die")
    assert holder.wait() == -signal.SIGKILL
    assert read_owner(record)["pid"] == holder.pid  # the dead owner's file is still there …
    lock = lock_cell(record, "g@cpu/onnx")  # … but not its lock
    assert read_owner(record)["pid"] == os.getpid()
    lock.release()
    assert not record.with_suffix(".lock").exists()


def test_a_matrix_run_refuses_before_any_cell_starts_when_another_run_holds_one(tmp_path: Path) -> None:
    m = parse_matrix({"teachers": ["digits-cnn"], "variants": {"onnx": ["export-onnx"]}})
    out = tmp_path / "out"
    holder = _hold(out / "cells" / "digits-cnn@cpu" / "onnx.json", "sleep")
    try:
        with pytest.raises(OptikitError, match=f"cell digits-cnn@cpu/onnx is being run by process {holder.pid}"):
            run_matrix(m, out, resume=True)
    finally:
        holder.kill()
        holder.wait()
    group = out / "cells" / "digits-cnn@cpu"
    assert sorted(p.name for p in group.iterdir()) == ["onnx.lock"]  # no cell started; the baseline's lock released


# A stand-in matrix process: starts a "cell" the way runner.run_cell_process does (own process group, the parent's
# pid in the environment) that starts a "measuring process" of its own, reports both pids, and waits.
MATRIX = """
import os, subprocess, sys
cell = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]], start_new_session=True,
                        env={**os.environ, "OPTIKIT_CELL_PARENT": str(os.getpid())}, stdout=subprocess.PIPE, text=True)
print(cell.stdout.readline().strip(), flush=True)
cell.wait()
"""
CELL = """
import subprocess, sys, time
if sys.argv[1] == "watchdog-only":
    sys.platform = "other"  # no PR_SET_PDEATHSIG: only the parent-watching thread can notice
from optikit.matrix.cell import die_with_parent
die_with_parent()
measuring = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print(f"{__import__('os').getpid()} {measuring.pid}", flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads process states from /proc")
@pytest.mark.parametrize("how", ["parent-death-signal", "watchdog-only"])
def test_a_cell_and_what_it_started_end_when_the_matrix_process_is_killed(how: str) -> None:
    matrix = subprocess.Popen([sys.executable, "-c", MATRIX, CELL, how], stdout=subprocess.PIPE, text=True)
    assert matrix.stdout is not None
    cell, measuring = map(int, matrix.stdout.readline().split())
    try:
        assert running(cell) and running(measuring)
        matrix.kill()
        matrix.wait()
        deadline = time.monotonic() + 20  # the watchdog polls every 0.5 s; generous for a loaded 2-core machine
        while (running(cell) or running(measuring)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not running(cell) and not running(measuring)
    finally:
        for pid in (cell, measuring):
            if running(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_cell_whose_parent_is_already_gone_ends_at_once() -> None:
    proc = subprocess.run([sys.executable, "-c", "from optikit.matrix.cell import die_with_parent\n"
                           "die_with_parent()\nimport time; time.sleep(60)"], start_new_session=True,
                          env={**os.environ, "OPTIKIT_CELL_PARENT": "1"}, timeout=30, check=False)
    assert proc.returncode == -signal.SIGKILL
