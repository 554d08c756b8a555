"""Where runs write: output folders and the cache folder, checked before any work so no measurement is lost."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from optikit.errors import ConfigError


def _nearest_existing(path: Path) -> Path:
    # os.path.lexists, not Path.exists: it answers False (never raises) for a path through a file or an unreadable
    # folder, so the walk stops at the first part that is really there.
    while not os.path.lexists(path) and path.parent != path:
        path = path.parent
    return path


def write_problem(folder: str | Path) -> str | None:
    """Why `folder` cannot be created and written to, in a few words; None when it can.

    Nothing is created: the nearest existing part of the path must be a folder that takes a new file (probed with
    a temporary file, removed at once), because that is where the missing folders would be made.
    """
    path = Path(folder).expanduser()
    existing = _nearest_existing(path)
    if not existing.is_dir():
        return f"{existing} is a file, not a folder" if existing.is_file() else f"{existing} is not a folder"
    try:
        handle, probe = tempfile.mkstemp(dir=existing, prefix=".optikit-probe-")
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        return f"{existing} is not writable ({exc.strerror or type(exc).__name__})"
    return None


def require_output_dir(folder: str | Path, flag: str = "--out") -> Path:
    """Refuses, in one line, an output folder that cannot be created or written to; returns it as a Path.

    Called by every command that writes, before anything is measured or trained, so a bad `--out` costs nothing.
    """
    problem = write_problem(folder)
    if problem is not None:
        fix = "pass a folder path" if "not a folder" in problem else "pass a folder you can write to"
        raise ConfigError(f"{flag} {folder}: {problem}; {fix}")
    return Path(folder)


def require_writable_home(home: Path) -> Path:
    """Refuses, in one line, a cache folder (OPTIKIT_HOME) that teachers and imported models cannot be written to."""
    problem = write_problem(home)
    if problem is not None:
        named = f"OPTIKIT_HOME={home}" if os.environ.get("OPTIKIT_HOME") else f"the cache folder {home} (OPTIKIT_HOME unset)"
        raise ConfigError(f"{named} is not writable: {problem}; set OPTIKIT_HOME to a writable folder")
    return home


__all__ = ["require_output_dir", "require_writable_home", "write_problem"]
