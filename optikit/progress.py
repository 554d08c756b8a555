"""Progress bars for long work (rich); silent when stderr is not a terminal or OPTIKIT_QUIET is set."""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[[int], None]]:
    if os.environ.get("OPTIKIT_QUIET") or not sys.stderr.isatty():
        yield lambda n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


def say(message: str) -> None:
    """One status line on stderr, so stdout stays for results."""
    if not os.environ.get("OPTIKIT_QUIET"):
        print(message, file=sys.stderr, flush=True)


def warn(message: str) -> None:
    """A warning a user must see (even with OPTIKIT_QUIET): one line on stderr."""
    print(f"optikit: warning: {message}", file=sys.stderr, flush=True)
