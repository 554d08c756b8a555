"""How a child process ended, in words: shared by the isolated measurements and the matrix cells."""
from __future__ import annotations

import signal


def exit_reason(returncode: int | None) -> str:
    """`killed by SIGSEGV` for a signal, `exited with code N` otherwise."""
    if returncode is not None and returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"
