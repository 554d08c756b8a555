"""The child side of isolation: measures one variant in a fresh process and writes its figures next to the job.

Run as `python -m optikit.harness._child JOB_DIR`; the parent (isolation.py) reads result.json and the .npy files.
Only model outputs and timings are taken here: every statistic is computed in the parent, from the probabilities
and the raw call times.
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

ABORT_HOOK = "OPTIKIT_TEST_ABORT"  # tests only: a variant id or name whose child calls os.abort()
LATENCY_DISTINCT_BATCHES = 16  # timed calls cycle through this many real batches (real lengths, not one shape)
TOKENIZATION_BATCHES = 8


def load_inputs(job_dir: Path, stem: str) -> Any:
    if (job_dir / f"{stem}.npy").is_file():
        return np.load(job_dir / f"{stem}.npy")
    if (job_dir / f"{stem}.json").is_file():
        return json.loads((job_dir / f"{stem}.json").read_text(encoding="utf-8"))
    return None


def _take(inputs: Any, idx: list[int]) -> Any:
    return inputs[np.asarray(idx)] if isinstance(inputs, np.ndarray) else [inputs[i] for i in idx]


def _peak_rss_mb() -> float:
    """The process's high-water resident set (VmHWM), read before anything else is loaded into it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def resolve_device(variant: Any, device: str) -> tuple[str, list[str]]:
    """The device a variant really runs on; a CUDA request on a machine without one is a note, not a failure."""
    if device == "cpu":
        return device, []
    if variant.format == "openvino":
        return "cpu", ["OpenVINO runs on the CPU here: this variant was measured on the CPU"]
    import torch

    if not torch.cuda.is_available():
        return "cpu", [f"{device} was requested but no CUDA device is available here: measured on the CPU"]
    if variant.format == "onnx":
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return "cpu", ["onnxruntime has no CUDA provider here: this ONNX variant was measured on the CPU"]
    return device, []


class _Model:
    """A runner with its encoder: `probs(inputs)` in eval batches, `batches(b)` for timing."""

    def __init__(self, path: str, job: dict[str, Any]) -> None:
        from optikit.models import Encoder
        from optikit.runners import load_runner
        from optikit.variant import load_variant

        self.variant = load_variant(path)
        self.device, self.notes = resolve_device(self.variant, job["device"])
        self.runner = load_runner(self.variant, job["threads"], self.device)
        self.encoder = Encoder(self.variant)
        self.pad_to = job["pad_to"]

    def probs(self, inputs: Any, batch_size: int) -> np.ndarray:
        from optikit.harness.metrics import softmax

        logits = [self.runner.logits(self.encoder.encode(inputs[s:s + batch_size], self.pad_to))
                  for s in range(0, len(inputs), batch_size)]
        return softmax(np.concatenate(logits))

    def batches(self, inputs: Any, batch_size: int) -> list[dict[str, np.ndarray]]:
        n = len(inputs)
        return [self.encoder.encode(_take(inputs, [(i * batch_size + j) % n for j in range(batch_size)]), self.pad_to)
                for i in range(LATENCY_DISTINCT_BATCHES)]

    def time_batch(self, inputs: Any, batch_size: int, config: Any) -> list[float]:
        """Seconds per call at `batch_size` (latency.time_calls over real batches); summarised in the parent."""
        from optikit.harness.latency import time_calls

        return time_calls(self.cycler(self.batches(inputs, batch_size)), config, self.runner.synchronize)

    def cycler(self, batches: list[dict[str, np.ndarray]]) -> Any:
        state = {"i": 0}

        def call() -> None:
            self.runner.logits(batches[state["i"] % len(batches)])
            state["i"] += 1

        return call


def measure(job_dir: Path, isolated: bool) -> dict[str, Any]:
    """Everything one variant needs from a process of its own; returns what it also writes to result.json."""
    from optikit.harness.diagnostics import op_counts
    from optikit.harness.latency import LatencyConfig
    from optikit.harness.size import measure_size
    from optikit.harness.timing import SpeedupConfig, interleaved_rounds

    job = json.loads((job_dir / "job.json").read_text(encoding="utf-8"))
    latency_config = LatencyConfig(**{**job["latency"], "batch_sizes": tuple(job["latency"]["batch_sizes"])})
    inputs = load_inputs(job_dir, "inputs")
    model = _Model(job["variant"], job)
    if job.get("latency_only"):  # a repeat: another process's view of the same timing, nothing else
        return {"latency_samples": {str(b): model.time_batch(inputs, b, latency_config)
                                    for b in latency_config.batch_sizes}}
    np.save(job_dir / "probs.npy", model.probs(inputs, job["eval_batch_size"]))
    # Predictions in every timed batch shape as well: a dynamically quantized model computes its activation scales
    # per batch (pad positions included), so what a user serving one request at a time gets can differ.
    for b in job.get("quality_batch_sizes", ()):
        if b != job["eval_batch_size"]:
            np.save(job_dir / f"probs_b{b}.npy", model.probs(inputs, b))
    suite_inputs = load_inputs(job_dir, "suite_inputs")
    if suite_inputs is not None and len(suite_inputs):
        np.save(job_dir / "suite_probs.npy", model.probs(suite_inputs, job["eval_batch_size"]))
    out: dict[str, Any] = {"runner": model.runner.info(), "device": model.device, "notes": list(model.notes),
                           "latency_samples": {}, "tokenization_ms": {}, "speedup_rounds": []}
    for b in latency_config.batch_sizes:
        out["latency_samples"][str(b)] = model.time_batch(inputs, b, latency_config)
        if model.encoder.kind == "text":
            # Timed apart from the model: a fast int8 model behind a slow tokenizer is still slow to a user.
            texts = [_take(inputs, [(j * b + k) % len(inputs) for k in range(b)]) for j in range(TOKENIZATION_BATCHES)]
            start = time.perf_counter()
            for t in texts:
                model.encoder.encode(t, model.pad_to)
            out["tokenization_ms"][str(b)] = (time.perf_counter() - start) * 1e3 / len(texts)
    out["size"] = measure_size(model.variant).to_dict()
    out["diagnostics"] = op_counts(model.variant, model.runner)
    # Read before the baseline joins this process for the speedup step: the figure is this variant's alone.
    out["peak_rss_mb"] = _peak_rss_mb() if isolated else None
    if job.get("baseline"):
        base = _Model(job["baseline"], job)
        speedup_config = SpeedupConfig(**job["speedup"])
        for b in latency_config.batch_sizes:
            base_call, var_call = base.cycler(base.batches(inputs, b)), model.cycler(model.batches(inputs, b))

            def sync(base: _Model = base) -> None:
                base.runner.synchronize()
                model.runner.synchronize()

            a, v = interleaved_rounds(base_call, var_call, speedup_config, sync)
            out["speedup_rounds"].append({"batch_size": b, "baseline": a, "variant": v})
    return out


def main(argv: list[str]) -> int:
    job_dir = Path(argv[1])
    job = json.loads((job_dir / "job.json").read_text(encoding="utf-8"))
    if os.environ.get(ABORT_HOOK) in (job["variant_id"], job["variant_name"]):
        os.abort()  # lets tests prove that a child dying without a word is recorded as a failed row
    try:
        out = measure(job_dir, isolated=True)
    except Exception as exc:
        from optikit.errors import OptikitError

        message = str(exc) if isinstance(exc, OptikitError) else f"{type(exc).__name__}: {exc}"
        out = {"error": message, "traceback": traceback.format_exc()[-4000:]}
    (job_dir / "result.json").write_text(json.dumps(out), encoding="utf-8")
    return 0 if "error" not in out else 3


if __name__ == "__main__":
    sys.exit(main(sys.argv))
