"""Child processes: how one ended, in words, whether one still runs, and ending one with all it started.

Shared by the isolated measurements, the matrix cells and the atomic writes (which clean up after dead writers).
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path
from typing import Any


def exit_reason(returncode: int | None) -> str:
    """`killed by SIGSEGV` for a signal, `exited with code N` otherwise."""
    if returncode is not None and returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (on this machine); True when that cannot be told (not POSIX).

    A zombie counts as alive: its pid is taken until its parent reaps it, so nothing it left may be reused yet.
    """
    if os.name != "posix":
        return True  # os.kill(pid, 0) would terminate the process on Windows: assume the owner lives
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by another user
    return True


def process_start_time(pid: int) -> float | None:
    """When the process `pid` started (seconds since the epoch, within ~1 s), or None where that cannot be read.

    Linux only (/proc): it tells a pid that was reused after its owner died from the owner itself.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    # The command name (field 2) may hold spaces and parentheses: the fields that follow start after the last ')'.
    fields = stat[stat.rfind(")") + 2:].split()
    try:
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22, starttime, in clock ticks after boot
    except (IndexError, ValueError, OSError):
        return None


def kill_process_group(proc: subprocess.Popen[Any]) -> None:
    """Kills a child started with `start_new_session=True` and everything it started (its measuring processes),
    then reaps it. Where there are no process groups (Windows), the child alone."""
    if hasattr(os, "killpg"):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    else:
        proc.kill()
    proc.wait()
