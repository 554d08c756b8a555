"""Process checks shared by the tests that kill a matrix run and its cells."""
from __future__ import annotations

from pathlib import Path


def running(pid: int) -> bool:
    """`pid` is alive and not a zombie (a zombie has ended; only its reaping by init is left)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
