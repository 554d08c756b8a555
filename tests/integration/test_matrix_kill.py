"""`kill -9` of `optikit bench MATRIX`: its running cell (and what the cell started) ends with it, and an
immediate `--resume` takes the dead run's cell over and completes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from optikit.matrix.owner import read_owner
from tests.integration.conftest import matrix_file, run_cli
from tests.process_helpers import running

CLI = "import sys; from optikit.cli import main; main(sys.argv[1:])"


def _group_members(pgid: int) -> list[int]:
    """Live processes of a process group: the cell leads its own, so this is the cell and what it started."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def _wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads process states from /proc")
def test_killing_a_matrix_run_ends_its_cell_and_resume_takes_the_cell_over(digits_teacher, tmp_path: Path) -> None:
    m = matrix_file(tmp_path / "one.toml", digits_teacher.path, "")  # the baseline cell alone
    out = tmp_path / "out"
    record = out / "cells" / f"{digits_teacher.path.name}@cpu" / "baseline.json"
    log = tmp_path / "matrix.log"
    with log.open("w") as fh:
        matrix = subprocess.Popen([sys.executable, "-c", CLI, "bench", str(m), "--out", str(out)], stdout=fh,
                                  stderr=subprocess.STDOUT)
    try:
        _wait_for(lambda: read_owner(record).get("cell_pid") or matrix.poll() is not None, 120,
                  "the cell never started")
        owner = read_owner(record)
        assert owner.get("pid") == matrix.pid, log.read_text()
        cell = owner["cell_pid"]
        assert running(cell)
        matrix.send_signal(signal.SIGKILL)
        matrix.wait()
        _wait_for(lambda: not _group_members(cell), 20, "the cell (or a process it started) outlived its matrix")
    finally:
        if matrix.poll() is None:
            matrix.kill()
            matrix.wait()
        for pid in _group_members(read_owner(record).get("cell_pid") or -1):
            os.kill(pid, signal.SIGKILL)
    assert not record.exists()  # the cell was stopped mid-way
    assert run_cli("bench", str(m), "--out", str(out), "--resume") == 0
    assert json.loads(record.read_text())["status"] == "ok"
    assert not record.with_suffix(".lock").exists()
