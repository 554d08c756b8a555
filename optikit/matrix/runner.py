"""Runs a matrix: one subprocess per cell, a record file per cell (what --resume reads), Results per teacher×device."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optikit._io import write_json_atomic
from optikit._process import exit_reason, kill_process_group
from optikit.errors import ConfigError
from optikit.matrix.cell import PARENT_PID_VARIABLE
from optikit.matrix.executors import ExecutorConfig, run_ray
from optikit.matrix.owner import CellLock, lock_cell, lock_cells
from optikit.matrix.spec import Matrix, TeacherSpec, VariantSpec
from optikit.variant import library_versions, variant_id

LOG_TAIL_LINES = 3


@dataclass(frozen=True)
class Cell:
    """One teacher × chain × device: the unit that runs in its own process and is cached by `key`."""

    teacher: TeacherSpec
    variant: VariantSpec
    device: str
    key: str
    record: Path

    @property
    def group(self) -> str:
        return f"{self.teacher.label}@{self.device}"

    @property
    def label(self) -> str:
        return f"{self.group}/{self.variant.name}"


@dataclass(frozen=True)
class MatrixRun:
    """What one `optikit bench MATRIX` produced: cell records (by group, in matrix order) and what ran this time."""

    matrix: Matrix
    out: Path
    records: dict[str, list[dict[str, Any]]]
    ran: tuple[str, ...]
    reused: tuple[str, ...]
    stopped_early: bool = False


def validate(matrix: Matrix) -> None:
    """User errors (unknown pass, unknown option, an order that cannot run) surface before any cell starts.

    A pass whose module is not importable yet is left to its cell, which records the failure: one missing
    plugin must not stop the other cells.
    """
    import importlib

    from optikit.passes.base import make_pass, passes, plan_chain

    for module in matrix.plugins:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"plugin module {module!r} cannot be imported: {exc}") from None
    known = passes.names()
    for v in matrix.variants:
        chain = []
        for step in v.chain:
            if step.pass_name not in known:
                raise ConfigError(f"variant {v.name!r}: unknown pass {step.pass_name!r}: known passes are "
                                  f"{', '.join(known)}")
            try:
                chain.append(make_pass((step.pass_name, dict(step.options))))
            except ConfigError as exc:
                raise ConfigError(f"variant {v.name!r}: {exc}") from None
            except ImportError:
                chain = None  # type: ignore[assignment]
                break
        if chain:
            for t in matrix.teachers:
                fmt = _teacher_format(t)
                if fmt:
                    try:
                        plan_chain(fmt, chain)
                    except ConfigError as exc:
                        raise ConfigError(f"variant {v.name!r}: {exc}") from None


def _teacher_format(teacher: TeacherSpec) -> str | None:
    from optikit.recipes import builtin_recipes, load_recipe

    try:
        if teacher.recipe in builtin_recipes("teachers") or teacher.recipe.endswith(".toml"):
            return load_recipe(teacher.recipe).format
        from optikit.importing import format_of

        return format_of(teacher.recipe)
    except Exception:  # noqa: BLE001 - the cell reports an unreadable teacher properly
        return None


def _recipe_fingerprint(teacher: TeacherSpec) -> str:
    path = Path(teacher.recipe)
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    manifest = path / "variant.json"
    if manifest.is_file():
        return hashlib.sha256(manifest.read_bytes()).hexdigest()
    if path.is_dir():  # the user's own model folder: a change of any file (name, size, time) re-runs its cells
        files = sorted((p.relative_to(path).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
                       for p in path.rglob("*") if p.is_file())
        return hashlib.sha256(json.dumps(files).encode()).hexdigest()
    return teacher.recipe


def plan_cells(matrix: Matrix, out: Path) -> list[Cell]:
    """Every cell, baseline first in each teacher×device group; keys change when anything that shapes the result does."""
    versions = library_versions()
    cells = []
    for t in matrix.teachers:
        for device in matrix.devices:
            for v in matrix.variants:
                key = variant_id(_recipe_fingerprint(t), t.data_options(), [s.spec() for s in v.chain], device,
                                 matrix.batch_sizes, matrix.latency.__dict__, matrix.threads, matrix.plugins,
                                 {k: versions.get(k) for k in ("optikit", "torch", "onnxruntime", "transformers")})
                record = out / "cells" / f"{t.label}@{device}" / f"{v.name}.json"
                cells.append(Cell(t, v, device, key, _inside(out, record)))
    return cells


def _inside(out: Path, path: Path) -> Path:
    """`path`, refused unless it stays under `out` once `..` is resolved: the specs check every name that makes a
    cell path, and this catches whatever a future name might slip past them. Lexical on purpose: a folder under
    --out that the user made a symlink to another disk is theirs to make."""
    root, where = (Path(os.path.normpath(os.path.abspath(p))) for p in (out, path))
    if where == root or root not in where.parents:
        raise ConfigError(f"cell file {path} would be written outside --out {out}: give the teacher a plain `label`")
    return path


def read_record(cell: Cell) -> dict[str, Any] | None:
    try:
        record = json.loads(cell.record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if record.get("key") == cell.key else None


def _spec(cell: Cell, matrix: Matrix) -> dict[str, Any]:
    return {"key": cell.key, "variant": cell.variant.name, "device": cell.device,
            "teacher": {"recipe": cell.teacher.recipe, "data": cell.teacher.data_path(), "label": cell.teacher.label,
                        "options": cell.teacher.data_options()},
            "chain": [s.spec() for s in cell.variant.chain], "batch_sizes": list(matrix.batch_sizes),
            "latency": dict(matrix.latency.__dict__), "threads": matrix.threads, "plugins": list(matrix.plugins),
            "record": str(cell.record)}


def _died(cell: Cell, returncode: int | None, log: Path, seconds: float, why: str = "") -> dict[str, Any]:
    if not why:
        why = f"cell process {exit_reason(returncode)}" + ("" if returncode is not None and returncode < 0
                                                           else " without a record")
    tail = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()][-LOG_TAIL_LINES:] if log.exists() else []
    return {"key": cell.key, "variant": cell.variant.name, "teacher": cell.teacher.label, "device": cell.device,
            "chain": [s.spec() for s in cell.variant.chain], "status": "failed",
            "error": why + (f" (last log line: {tail[-1][:200]})" if tail else ""), "seconds": round(seconds, 2),
            "finished": time.time()}


def run_cell_process(cell: Cell, matrix: Matrix, lock: CellLock | None = None) -> dict[str, Any]:
    """Runs one cell in a fresh interpreter; whatever happens there, returns a record (and writes it).

    The cell is owned while it runs: by `lock` when the caller took it (the local executor takes every cell it will
    run first), else here. The cell process ends with this one (see cell.die_with_parent), and everything it
    started ends with it on a timeout or an interrupt (it leads its own process group).
    """
    if lock is None:
        lock = lock_cell(cell.record, cell.label)
        try:
            return run_cell_process(cell, matrix, lock)
        finally:
            lock.release()
    cell.record.parent.mkdir(parents=True, exist_ok=True)
    spec_path = cell.record.with_suffix(".spec.json")
    log = cell.record.with_suffix(".log")
    write_json_atomic(spec_path, _spec(cell, matrix))
    cell.record.unlink(missing_ok=True)
    start = time.perf_counter()
    # PYTHONFAULTHANDLER: a native crash leaves its stack in the cell log.
    env = {**os.environ, "PYTHONFAULTHANDLER": "1", PARENT_PID_VARIABLE: str(os.getpid())}
    with log.open("w", encoding="utf-8") as fh:
        # Its own session: the cell leads a process group that ends whole. The lock's descriptor: the cell keeps the
        # cell owned even if it outlives this process (pass_fds is POSIX only; there is no lock elsewhere).
        proc = subprocess.Popen([sys.executable, "-m", "optikit.matrix.cell", str(spec_path)], stdout=fh,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                pass_fds=(lock.fd,) if os.name == "posix" else ())
        try:
            lock.note_cell_process(proc.pid)
            code: int | None = proc.wait(timeout=matrix.cell_timeout_s)
        except subprocess.TimeoutExpired:
            kill_process_group(proc)
            record = _died(cell, None, log, time.perf_counter() - start,
                           f"cell timed out after {matrix.cell_timeout_s:g} s")
            write_json_atomic(cell.record, record)
            return record
        except BaseException:  # Ctrl-C, or an error here: the cell and its measuring processes must not outlive us
            kill_process_group(proc)
            raise
    found = read_record(cell)
    if found is None:
        found = _died(cell, code, log, time.perf_counter() - start)
        write_json_atomic(cell.record, found)
    return found


def run_matrix(matrix: Matrix, out: Path, *, resume: bool = False, fail_fast: bool = False,
               echo: Callable[[str], None] = lambda s: None, only: set[str] | None = None,
               executor: ExecutorConfig | None = None) -> MatrixRun:
    """Runs every cell (or, with `resume`, every cell without a finished record) one after another, or as Ray
    tasks with `executor=ExecutorConfig("ray")`."""
    validate(matrix)
    out.mkdir(parents=True, exist_ok=True)
    if executor is not None and executor.name == "ray":
        return _run_matrix_ray(matrix, out.resolve(), resume, fail_fast, echo, executor)
    cells = plan_cells(matrix, out)
    done = {c.record: r for c in cells if resume and (r := read_record(c)) is not None and r.get("status") == "ok"}
    # Every cell this run will start is taken before the first starts: a second run over the same --out (a
    # --resume while this one still runs) is refused at once instead of racing this one cell by cell.
    locks = lock_cells([(c.record, c.label) for c in cells if c.record not in done])
    try:
        return _run_cells(matrix, out, cells, done, locks, fail_fast, echo)
    finally:
        for lock in locks.values():
            lock.release()


def _run_cells(matrix: Matrix, out: Path, cells: list[Cell], done: dict[Path, dict[str, Any]],
               locks: dict[Path, CellLock], fail_fast: bool, echo: Callable[[str], None]) -> MatrixRun:
    records: dict[str, list[dict[str, Any]]] = {}
    ran, reused = [], []
    stopped = False
    for i, cell in enumerate(cells, 1):
        previous = done.get(cell.record)
        if previous is not None:
            records.setdefault(cell.group, []).append(previous)
            reused.append(cell.label)
            echo(f"[{i}/{len(cells)}] {cell.label}: done earlier (resumed)")
            continue
        if stopped:
            continue
        echo(f"[{i}/{len(cells)}] {cell.label} ({' → '.join(s.spec() for s in cell.variant.chain) or 'teacher'}) …")
        record = run_cell_process(cell, matrix, locks[cell.record])
        locks.pop(cell.record).release()
        ran.append(cell.label)
        records.setdefault(cell.group, []).append(record)
        status = "ok" if record["status"] == "ok" else f"FAILED: {record.get('error')}"
        echo(f"[{i}/{len(cells)}] {cell.label}: {status} ({record.get('seconds', 0):.1f} s)")
        if fail_fast and record["status"] != "ok":
            stopped = True
    return MatrixRun(matrix, out, records, tuple(ran), tuple(reused), stopped)


def _run_matrix_ray(matrix: Matrix, out: Path, resume: bool, fail_fast: bool, echo: Callable[[str], None],
                    executor: ExecutorConfig) -> MatrixRun:
    """The Ray path: the same cells, records and resume rule; cells run concurrently, records keep matrix order."""
    cells = plan_cells(matrix, out)
    by_label: dict[str, dict[str, Any]] = {}
    reused, todo = [], []
    for cell in cells:
        previous = read_record(cell) if resume else None
        if previous is not None and previous.get("status") == "ok":
            by_label[cell.label] = previous
            reused.append(cell.label)
            echo(f"{cell.label}: done earlier (resumed)")
        else:
            todo.append(cell)
    echo(f"submitting {len(todo)} cells to Ray")
    ran = []
    for cell, record in run_ray(todo, matrix, executor.address, lambda r: fail_fast and r["status"] != "ok"):
        by_label[cell.label] = record
        ran.append(cell.label)
        status = "ok" if record["status"] == "ok" else f"FAILED: {record.get('error')}"
        echo(f"[{len(ran)}/{len(todo)}] {cell.label}: {status} ({record.get('seconds', 0):.1f} s)")
    records: dict[str, list[dict[str, Any]]] = {}
    for cell in cells:
        if cell.label in by_label:
            records.setdefault(cell.group, []).append(by_label[cell.label])
    return MatrixRun(matrix, out, records, tuple(ran), tuple(reused), len(ran) < len(todo))
