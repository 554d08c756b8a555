"""Benchmark matrices: teachers × pass chains × batch sizes × devices, run cell by cell, gated for CI."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from optikit.harness.results import Results
from optikit.matrix.collect import group_results
from optikit.matrix.executors import ExecutorConfig
from optikit.matrix.gate import RuleOutcome, conditions_outcome, evaluate
from optikit.matrix.runner import MatrixRun, run_matrix
from optikit.matrix.spec import Matrix, load_matrix, parse_matrix

if TYPE_CHECKING:
    from optikit.tracking.mlflow import TrackingConfig

__all__ = ["ExecutorConfig", "Matrix", "MatrixOutcome", "bench_matrix", "load_matrix", "parse_matrix"]


@dataclass(frozen=True)
class MatrixOutcome:
    run: MatrixRun
    groups: dict[str, Results]
    gate: list[RuleOutcome]
    paths: dict[str, Path]

    @property
    def gate_passed(self) -> bool:
        return all(o.passed for o in self.gate)

    @property
    def failed_cells(self) -> list[str]:
        return [f"{g}/{r['variant']}" for g, recs in self.run.records.items() for r in recs if r["status"] != "ok"]


def with_data(matrix: Matrix, data: str | None) -> Matrix:
    """`--data PATH` replaces the data of every teacher that reads a file (text teachers)."""
    if not data:
        return matrix
    teachers = tuple(replace(t, data=str(Path(data).resolve()), data_env=None) if (t.data or t.data_env) else t
                     for t in matrix.teachers)
    return replace(matrix, teachers=teachers)


def bench_matrix(matrix: Matrix | str | Path, out: Path, *, resume: bool = False, fail_fast: bool = False,
                 echo: Callable[[str], None] = lambda s: None, executor: ExecutorConfig | None = None,
                 tracking: TrackingConfig | None = None, allow_noisy: bool = False) -> MatrixOutcome:
    """Runs the matrix into `out` and writes results.json, results.csv, results-long.csv, summary.md and report.html.

    One teacher×device group writes straight into `out`; several write one folder each plus, in `out`, a combined
    summary.md, results.csv and results-long.csv (their `teacher` and `device` columns tell the groups apart).
    Besides the matrix's rules the gate holds its own: every variant was timed in fair conditions (no starved
    machine, no self-contradicting figures) unless `allow_noisy`.
    """
    from optikit._io import write_text_atomic
    from optikit.report.outputs import write_combined, write_outputs
    from optikit.report.summary import summary_markdown

    matrix = matrix if isinstance(matrix, Matrix) else load_matrix(matrix)
    run = run_matrix(matrix, out, resume=resume, fail_fast=fail_fast, echo=echo, executor=executor)
    groups = {g: group_results(matrix, g, recs) for g, recs in run.records.items()}
    outcomes = [*evaluate(matrix.gate, groups), conditions_outcome(groups, allow_noisy)]
    gate_dicts = [o.to_dict() for o in outcomes]
    paths: dict[str, Path] = {}
    for g, results in groups.items():
        results.settings["gate"] = gate_dicts  # kept in results.json so `optikit report` re-renders it
        target = out if len(groups) == 1 else out / g.replace("@", "-at-")
        written = write_outputs(results, target, title=f"optikit bench {matrix.name}")
        paths.update(written if len(groups) == 1 else {f"{g}:{k}": p for k, p in written.items()})
    if len(groups) > 1:
        paths.update(write_combined(groups, out))
        paths["md"] = out / "summary.md"
        write_text_atomic(paths["md"], summary_markdown(groups, title=f"optikit bench {matrix.name}", gate=gate_dicts))
    if tracking is not None:
        from optikit.tracking.mlflow import track

        cells = {g: {n: c.get("variant_path") for n, c in r.settings["matrix"]["cells"].items()}
                 for g, r in groups.items()}
        track(groups, paths, out, config=tracking, run_name=matrix.name, variant_paths=cells,
              tags={"optikit.matrix": matrix.name})
    return MatrixOutcome(run, groups, outcomes, paths)
