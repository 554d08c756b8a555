"""Isolation: each variant is measured in a fresh Python process, so memory and threads never leak between them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from optikit._process import exit_reason
from optikit.errors import MeasurementError, OptikitError

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass
class Measured:
    """What a child sent back: figures (result.json), the test-set probabilities (in eval batches, and in each
    timed batch size: `probs_by_batch`), and the suite's."""

    figures: dict[str, Any]
    probs: np.ndarray
    suite_probs: np.ndarray | None
    probs_by_batch: dict[int, np.ndarray] = field(default_factory=dict)


def _write_inputs(directory: Path, stem: str, inputs: Any) -> None:
    if inputs is None:
        return
    if isinstance(inputs, np.ndarray):
        np.save(directory / f"{stem}.npy", inputs)
    else:
        (directory / f"{stem}.json").write_text(json.dumps(list(inputs)), encoding="utf-8")


def _death(returncode: int, stderr: str) -> str:
    reason = f"the measuring process {exit_reason(returncode)}" + ("" if returncode < 0 else " without a result")
    tail = " | ".join(line for line in stderr.strip().splitlines()[-3:] if line.strip())
    return f"{reason}{': ' + tail if tail else ''}"


def _run_child(directory: Path, job: dict[str, Any], isolate: bool, timeout_s: float | None) -> dict[str, Any]:
    from optikit.harness import _child

    (directory / "job.json").write_text(json.dumps(job), encoding="utf-8")
    if isolate:
        # Thread pools are sized when torch / ORT load: the variables must be set before the child starts.
        env = {**os.environ, **{v: str(job["threads"]) for v in THREAD_VARIABLES}}
        result = directory / "result.json"
        result.unlink(missing_ok=True)
        try:
            proc = subprocess.run([sys.executable, "-m", "optikit.harness._child", str(directory)], env=env,
                                  capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise MeasurementError(f"measuring {job['variant_name']} took longer than {timeout_s:g} s") from None
        if not result.is_file():
            raise MeasurementError(_death(proc.returncode, proc.stderr))
        figures: dict[str, Any] = json.loads(result.read_text(encoding="utf-8"))
    else:
        try:
            figures = _child.measure(directory, isolated=False)
        except OptikitError:
            raise
        except Exception as exc:  # in-process mode still records instead of aborting the matrix
            figures = {"error": f"{type(exc).__name__}: {exc}"}
    if "error" in figures:
        raise MeasurementError(figures["error"])
    return figures


def _summarise_latency(figures: dict[str, Any], repeats: list[dict[str, Any]], job: dict[str, Any]) -> None:
    """Turns the raw call times of the first process and its repeats into one summary per batch size."""
    from optikit.harness.latency import Latency

    samples = figures.pop("latency_samples")
    lat = job["latency"]
    figures["latency"] = [
        Latency.from_processes(int(b), [s, *(r["latency_samples"][b] for r in repeats)], lat["blocks"],
                               lat["min_block_calls"]).to_dict()
        for b, s in samples.items()]


def measure_variant(job: dict[str, Any], inputs: Any, suite_inputs: Any, *, isolate: bool = True,
                    timeout_s: float | None = None, processes: int = 1) -> Measured:
    """Runs the child measurement for one variant; any failure (even a segfault) raises MeasurementError.
    With `processes` > 1 the latency is timed again in that many fresh processes in all, and pooled."""
    with tempfile.TemporaryDirectory(prefix="optikit-bench-") as tmp:
        directory = Path(tmp)
        _write_inputs(directory, "inputs", inputs)
        _write_inputs(directory, "suite_inputs", suite_inputs)
        figures = _run_child(directory, job, isolate, timeout_s)
        repeats = [_run_child(directory, {**job, "latency_only": True}, isolate, timeout_s)
                   for _ in range(processes - 1)]
        _summarise_latency(figures, repeats, job)
        suite = directory / "suite_probs.npy"
        by_batch = {int(p.stem.removeprefix("probs_b")): np.load(p) for p in directory.glob("probs_b*.npy")}
        return Measured(figures, np.load(directory / "probs.npy"), np.load(suite) if suite.is_file() else None,
                        by_batch)
