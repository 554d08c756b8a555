"""A request the log acknowledged survives the process being killed: SIGKILL a writer mid-stream, reopen, count."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from optikit.serve.log import RequestLog

pytestmark = pytest.mark.skipif(os.name != "posix", reason="SIGKILL is POSIX")

REPO = Path(__file__).resolve().parents[2]
KILL_AFTER = 300  # acknowledged rows seen before the kill

# Four threads write rows for ever, each printing a row's id only once its future completed (the commit), as the
# server answers a request only after its row is committed.
WRITER = """
import sys, threading, time, uuid
from optikit.serve.log import LogMeta, Prediction, RequestLog, RequestRecord

log = RequestLog.open(sys.argv[1], LogMeta("teacher", "int8", "/m/t", "/m/i", ("a", "b"), "shadow", {}, "text"))
out = threading.Lock()

def write():
    while True:
        rid = uuid.uuid4().hex
        row = RequestRecord(rid, time.time(), "baseline", "k" * 16, "h" * 64, None, Prediction(0, (0.9, 0.1), 1.0),
                            Prediction(1, (0.4, 0.6), 0.5))
        log.record([row]).result()
        with out:
            sys.stdout.write(rid + "\\n")
            sys.stdout.flush()

for _ in range(4):
    threading.Thread(target=write, daemon=True).start()
threading.Event().wait()
"""


def test_every_acknowledged_row_survives_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "serve.db"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO, env=env)
    lines: list[str] = []
    enough = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:  # ends at EOF, once the process is dead
            lines.append(line)
            if len(lines) >= KILL_AFTER:
                enough.set()
        enough.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        enough.wait(timeout=180)
        assert len(lines) >= KILL_AFTER, f"the writer stopped early: {proc.stderr.read() if proc.poll() is not None else ''}"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
    reader.join(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    acknowledged = [line.strip() for line in lines if line.endswith("\n")]  # a half-written last line is no ack
    with RequestLog.open(path) as log:
        logged = {r.id for r in log.records()}
    missing = [rid for rid in acknowledged if rid not in logged]
    assert len(acknowledged) >= KILL_AFTER and missing == []
