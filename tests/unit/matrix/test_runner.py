"""run_cell_process: a cell that runs past its timeout is recorded as failed and ends with all it started."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from optikit.matrix.owner import CellLock
from optikit.matrix.runner import plan_cells, run_cell_process
from optikit.matrix.spec import parse_matrix


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="process groups are POSIX")
def test_a_cell_past_its_timeout_is_recorded_and_its_process_group_ends(tmp_path: Path, monkeypatch) -> None:
    started: list[int] = []
    note = CellLock.note_cell_process
    monkeypatch.setattr(CellLock, "note_cell_process", lambda self, pid: (started.append(pid), note(self, pid))[1])
    m = parse_matrix({"teachers": ["digits-cnn"], "cell_timeout_s": 0.5})
    [cell] = plan_cells(m, tmp_path)
    record = run_cell_process(cell, m)  # 0.5 s: the cell is still importing torch (or training the teacher)
    assert record["status"] == "failed" and record["error"].startswith("cell timed out after 0.5 s")
    assert json.loads(cell.record.read_text())["error"] == record["error"]
    assert not _group_alive(started[0])
    assert not cell.record.with_suffix(".lock").exists()
