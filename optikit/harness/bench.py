"""The harness: every variant measured against the baseline on the same test split, by the same code path."""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from optikit.config import require
from optikit.errors import ConfigError, OptikitError
from optikit.harness.environment import environment
from optikit.harness.latency import Latency, LatencyConfig, time_calls
from optikit.harness.metrics import alignment, capability, fidelity, softmax
from optikit.harness.results import Results, VariantResult
from optikit.harness.size import measure_size
from optikit.models import Encoder
from optikit.progress import say
from optikit.runners import default_threads, load_runner
from optikit.variant import Variant

LATENCY_DISTINCT_BATCHES = 16  # timed calls cycle through this many real batches (real lengths, not one shape)


@dataclass(frozen=True)
class BenchConfig:
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    threads: int = 0  # 0: min(cores, 8)
    device: str = "cpu"
    split: str = "test"
    eval_batch_size: int = 64
    pad_to: int | None = None  # text only: fixed-shape mode pads every batch to this length

    def __post_init__(self) -> None:
        require(self.threads >= 0, f"threads must be ≥ 0, got {self.threads}")
        require(self.split in ("test", "validation", "calibration", "train"), f"unknown split {self.split!r}")
        require(self.device == "cpu" or self.device.startswith("cuda"), f"device must be cpu or cuda, got {self.device!r}")


@dataclass
class _Outputs:
    probs: np.ndarray
    preds: np.ndarray


def _latency_batches(encoder: Encoder, data: Any, batch_size: int, pad_to: int | None) -> list[dict[str, np.ndarray]]:
    n = len(data)
    batches = []
    for i in range(LATENCY_DISTINCT_BATCHES):
        idx = [(i * batch_size + j) % n for j in range(batch_size)]
        batches.append(encoder.encode(data.take(idx).inputs, pad_to))
    return batches


def _measure_one(variant: Variant, data: Any, config: BenchConfig, threads: int) -> tuple[VariantResult, _Outputs]:
    runner = load_runner(variant, threads, config.device)
    encoder = Encoder(variant)
    result = VariantResult(id=variant.id, name=variant.name, format=variant.format,
                           lineage=[s.label() for s in variant.lineage], parent=variant.parent,
                           runner=runner.info(), pass_report=variant.report)
    logits = np.concatenate([runner.logits(f) for f in encoder.batches(data, config.eval_batch_size, config.pad_to)])
    probs = softmax(logits)
    preds = probs.argmax(-1)
    result.alignment = alignment(data.labels, preds, data.label_names)
    result.capability = capability(data.labels, probs)
    for b in config.latency.batch_sizes:
        batches = _latency_batches(encoder, data, b, config.pad_to)
        cursor = iter(range(10**9))

        def call(batches: list[dict[str, np.ndarray]] = batches) -> None:
            runner.logits(batches[next(cursor) % len(batches)])

        samples = time_calls(call, config.latency, runner.synchronize)
        result.latency.append(Latency.from_samples(b, samples).to_dict())
        if data.kind == "text":
            texts = [data.take([(j * b + k) % len(data) for k in range(b)]).inputs for j in range(8)]
            start = time.perf_counter()
            for t in texts:
                encoder.encode(t, config.pad_to)
            result.tokenization_ms[str(b)] = (time.perf_counter() - start) * 1e3 / len(texts)
    result.size = measure_size(variant).to_dict()
    return result, _Outputs(probs, preds)


def bench(variants: Sequence[Variant], config: BenchConfig | None = None, *, data: Any = None,
          fail_fast: bool = False) -> Results:
    """Measures `variants` (the first is the baseline) on the baseline's split; a failing variant is recorded."""
    from optikit.teach import dataset_for

    if not variants:
        raise ConfigError("nothing to bench: give at least one variant")
    config = config or BenchConfig()
    threads = config.threads or default_threads()
    baseline = variants[0]
    for v in variants[1:]:
        if v.task.label_names != baseline.task.label_names:
            raise ConfigError(f"{v.name} predicts other labels than {baseline.name}: bench variants of one teacher")
    full = data if data is not None else dataset_for(baseline)
    split = full.take(getattr(baseline.splits, config.split))
    rows: list[VariantResult] = []
    base_out: _Outputs | None = None
    for v in variants:
        say(f"measuring {v.name} ({v.format}) …")
        try:
            row, out = _measure_one(v, split, config, threads)
        except OptikitError as exc:
            if fail_fast:
                raise
            rows.append(VariantResult(id=v.id, name=v.name, format=v.format, lineage=[s.label() for s in v.lineage],
                                      parent=v.parent, status="failed", error=str(exc)))
            continue
        if base_out is None:
            base_out, row.is_baseline = out, True
        row.fidelity = fidelity(split.labels, base_out.probs, out.probs)
        rows.append(row)
    if base_out is None:
        raise ConfigError(f"the baseline {baseline.name} could not be measured: {rows[0].error}")
    _add_notes(rows)
    return Results(variants=rows, baseline_id=baseline.id,
                   task={"kind": split.kind, "label_names": list(split.label_names), "split": config.split,
                         "examples": len(split), "data": baseline.data.to_dict()},
                   environment=environment(threads, config.device),
                   settings={"latency": config.latency.__dict__, "threads": threads, "pad_to": config.pad_to,
                             "eval_batch_size": config.eval_batch_size})


def _add_notes(rows: list[VariantResult]) -> None:
    """Plain warnings a reader needs: a compressed variant that is slower than its parent, sparse weights in dense kernels."""
    by_id = {r.id: r for r in rows}
    for r in rows:
        if r.status != "ok":
            continue
        parent = by_id.get(r.parent or "")
        if parent and parent.status == "ok":
            for lat in r.latency:
                ref = parent.latency_at(lat["batch_size"])
                if ref and lat["p50_ms"] > ref["p50_ms"] * 1.05:
                    r.notes.append(f"slower than its parent {parent.name} at batch {lat['batch_size']} "
                                   f"({lat['p50_ms']:.3f} vs {ref['p50_ms']:.3f} ms p50)")
        size = r.size
        if size.get("parameters") and size["nonzero_parameters"] < 0.9 * size["parameters"]:
            r.notes.append("zeros in dense kernels do not make inference faster: this sparsity saves compressed "
                           "bytes, not time")
