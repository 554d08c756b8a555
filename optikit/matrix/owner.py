"""Cell ownership: one lock file per matrix cell, held while the matrix run that started the cell (or the cell
process itself) lives, so two runs over one --out never run the same cell and a dead run's cells can be taken over.

The lock is an advisory `flock` on `<cell>.lock`, not a pid written in a file: the kernel drops it the moment its
last holder dies (kill -9 included), so there is no stale lock to judge and no reused pid to mistake for the owner.
The cell process inherits the lock's descriptor, so a cell that outlived its matrix still holds the cell. The file
names the holder (pid, cell pid, since when, host) for the refusal message only.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optikit.errors import OptikitError

LOCK_SUFFIX = ".lock"
# POSIX only; where there is no flock (Windows) cells are not locked and two runs over one --out may collide.
_fcntl: Any = importlib.import_module("fcntl") if os.name == "posix" else None


@dataclass
class CellLock:
    """A held cell lock: `fd` is the descriptor a cell process inherits to keep the cell while it runs."""

    path: Path
    fd: int

    def note_cell_process(self, pid: int) -> None:
        """Records the cell process's pid beside the owner's, for a refusal message (and a test) to name."""
        _write_owner(self.fd, {**_read_owner(self.fd), "cell_pid": pid})

    def release(self) -> None:
        """Removes the lock file (while still holding it, so a waiter that opened it sees it was removed) and drops
        the lock. A cell process still alive keeps its inherited copy until it ends."""
        with contextlib.suppress(OSError):
            if _same_file(self.path, self.fd):
                self.path.unlink()
        with contextlib.suppress(OSError):
            os.close(self.fd)


def lock_cell(record: Path, label: str) -> CellLock:
    """Takes the cell whose record is `record`; refuses in one line if a live run (or cell process) holds it.

    A cell whose previous owner died is taken over: its lock went with the owner, only the file remains.
    """
    path = record.with_suffix(LOCK_SUFFIX)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        if _fcntl is None:
            break
        try:
            _fcntl.flock(fd, _fcntl.LOCK_EX | _fcntl.LOCK_NB)
        except OSError:
            owner = _read_owner(fd)
            os.close(fd)
            raise OptikitError(f"cell {label} is being run by {_describe(owner)}: wait for that run to end (or stop "
                               "it), then run again with --resume") from None
        if _same_file(path, fd):
            break
        os.close(fd)  # its owner removed the file between our open and our lock: lock the file there now
    _write_owner(fd, {"pid": os.getpid(), "cell_pid": None, "since": time.time(), "host": socket.gethostname()})
    return CellLock(path, fd)


def lock_cells(cells: list[tuple[Path, str]]) -> dict[Path, CellLock]:
    """Takes every (record, label) cell, or none: a refusal releases the ones already taken."""
    held: dict[Path, CellLock] = {}
    try:
        for record, label in cells:
            held[record] = lock_cell(record, label)
    except BaseException:
        for lock in held.values():
            lock.release()
        raise
    return held


def read_owner(record: Path) -> dict[str, Any]:
    """What the lock file of the cell whose record is `record` says about its holder ({} when there is none)."""
    try:
        return dict(json.loads(record.with_suffix(LOCK_SUFFIX).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return {}


def _describe(owner: dict[str, Any]) -> str:
    if not owner.get("pid"):
        return "another process"  # it has the lock but has not written its name yet
    where = f" on {owner['host']}" if owner.get("host") and owner["host"] != socket.gethostname() else ""
    cell = f", cell process {owner['cell_pid']}" if owner.get("cell_pid") else ""
    since = time.strftime(" since %H:%M:%S", time.localtime(owner["since"])) if owner.get("since") else ""
    return f"process {owner['pid']}{where}{cell}{since}"


def _same_file(path: Path, fd: int) -> bool:
    try:
        on_disk, held = os.stat(path), os.fstat(fd)
    except OSError:
        return False
    return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)


def _read_owner(fd: int) -> dict[str, Any]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return dict(json.loads(os.read(fd, 4096).decode("utf-8")))
    except (OSError, ValueError, TypeError):
        return {}


def _write_owner(fd: int, owner: dict[str, Any]) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(owner).encode("utf-8"))
