"""Atomic writes: a file or a directory appears whole or not at all."""
from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    # tempfile creates 0600 files and 0700 folders; what we publish follows the user's umask like any other file.
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    """Writes strict JSON: NaN and Infinity, which strict parsers (and most languages but Python) reject, are refused
    with the key path of the first such value, so a bug that made one is found where it was written."""
    try:
        text = json.dumps(data, indent=2, sort_keys=False, default=_json_default, allow_nan=False)
    except ValueError:
        where = _non_finite_path(data, Path(path).stem)
        if where is None:
            raise
        raise ValueError(f"refusing to write {where[1]} at {where[0]} into {path}: strict JSON has no NaN or "
                         "Infinity; the code that made this value should write None (null) for a missing number "
                         "or fail") from None
    write_text_atomic(path, text + "\n")


def _non_finite_path(value: Any, where: str) -> tuple[str, float] | None:
    """(key path, value) of the first float that is not finite in `value`, as json.dumps would meet it."""
    import math

    import numpy as np

    if isinstance(value, (np.generic, np.ndarray)):
        value = value.tolist()
    if isinstance(value, float):
        return None if math.isfinite(value) else (where, value)
    if isinstance(value, dict):
        items: Any = ((f"{where}.{key}", item) for key, item in value.items())
    elif isinstance(value, (list, tuple)):
        items = ((f"{where}[{i}]", item) for i, item in enumerate(value))
    else:
        return None
    for path, item in items:
        found = _non_finite_path(item, path)
        if found is not None:
            return found
    return None


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


@contextlib.contextmanager
def atomic_directory(target: Path, *, replace: bool = False) -> Iterator[Path]:
    """Yields an empty temporary sibling of `target` that becomes `target` only if the block succeeds.

    Writers of one target may run at once (two processes making the same variant): each succeeds and one whole
    copy remains. With `replace` the last to finish wins (its copy is swapped in), without it the first (a later
    writer finds a copy there and drops its own). Partial folders left by writers that died are removed first.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(target)
    tmp = _partial_path(target)
    os.mkdir(tmp)  # mode 0o777 less the umask: what we publish follows the user's umask like any other folder
    try:
        yield tmp
        _publish(tmp, target, replace)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # ours unpublished, or the copy we swapped out


# A partial folder is named `.{target}.{host}-{pid}.{random}.partial`, so its writer can be told from its name: the
# next writer of the same target removes one whose writer died (kill -9, a power cut) and never one still at work.
# The host tag keeps a shared disk safe: another machine's pids mean nothing here, so its partials are left alone.
_HOST_TAG = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_PARTIAL = re.compile(r"^(?P<host>[0-9a-f]{8})-(?P<pid>[0-9]+)\.[0-9a-f]+\.partial$")
# A live pid whose process started after the partial folder was last written to is not its writer (the pid was
# reused). An hour of slack: a wall clock stepped after the write must never make a live writer's folder look stale.
_REUSED_PID_SLACK_S = 3600.0


def _partial_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.{_HOST_TAG}-{os.getpid()}.{secrets.token_hex(6)}.partial")


def remove_stale_partials(target: Path) -> list[Path]:
    """Removes the partial folders of `target` whose writer process is gone; returns the ones removed."""
    prefix = f".{target.name}."
    try:
        entries = [e for e in os.scandir(target.parent) if e.name.startswith(prefix) and e.name.endswith(".partial")]
    except FileNotFoundError:
        return []
    removed = []
    for entry in entries:
        match = _PARTIAL.match(entry.name[len(prefix):])
        if match is None or match["host"] != _HOST_TAG or _writer_alive(int(match["pid"]), Path(entry.path)):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(Path(entry.path))
    return removed


def _writer_alive(pid: int, partial: Path) -> bool:
    from optikit._process import pid_alive, process_start_time

    if pid == os.getpid():
        return True  # another thread of this process, writing the same target
    if not pid_alive(pid):
        return False
    started = process_start_time(pid)
    try:
        written = partial.stat().st_mtime
    except FileNotFoundError:
        return True  # gone already: nothing to remove
    return started is None or written >= started - _REUSED_PID_SLACK_S


def _publish(tmp: Path, target: Path, replace: bool) -> None:
    """Renames `tmp` to `target`; when another writer's copy is there, keeps it or (replace) swaps ours in."""
    for _ in range(100):  # each turn fails only because another writer moved `target` in between
        try:
            os.rename(tmp, target)  # onto nothing (or an empty folder): one step, no reader sees half of it
            return
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
        if not replace:
            return  # a whole copy is there (only whole copies are ever renamed in): ours is dropped by the caller
        try:
            if _exchange(tmp, target):
                return  # `tmp` now holds the copy we replaced, removed by the caller
            # No atomic swap on this system: move the copy aside under a fresh name of ours (never a fixed `.old`,
            # which two writers would fight over), then rename again; readers may miss `target` for that moment.
            aside = _partial_path(target)
            os.rename(target, aside)
            shutil.rmtree(aside, ignore_errors=True)
        except FileNotFoundError:
            continue  # another writer moved it first
    raise OSError(errno.EBUSY, f"{target} kept changing while other writers replaced it", str(target))


def _exchange(a: Path, b: Path) -> bool:
    """Swaps two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where the system or filesystem can't."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # a kernel or filesystem without it
        return False
    raise OSError(err, os.strerror(err), str(b))  # ENOENT becomes FileNotFoundError: another writer moved `b`


@functools.cache
def _renameat2() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).renameat2  # glibc ≥ 2.28
    except (OSError, AttributeError):
        return None
