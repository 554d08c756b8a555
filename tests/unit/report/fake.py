"""Hand-built Results for report and gate tests: no model, no timing, every optional harness field present."""
from __future__ import annotations

from typing import Any

from optikit.harness.results import Results, VariantResult

HOSTILE = "</script><img src=x onerror=alert(1)>"


def fake_row(name: str, *, f1: float, acc: float, p50: float, size: int, lineage: list[str], baseline: bool = False,
             ci: tuple[float, float] | None = None, label: str = "cat",
             speedup: tuple[float, float, float] | None = None) -> VariantResult:
    """One measured row; p50 is the batch-1 median (√batch longer at larger batches); `speedup` is an interleaved
    (ratio, low, high) at every batch size."""
    v = VariantResult(id=f"id-{name}", name=name, format="onnx" if lineage else "torch", lineage=lineage,
                      parent=None if baseline else "id-baseline", is_baseline=baseline)
    v.alignment = {"accuracy": acc, "f1_macro": f1, "f1_weighted": f1,
                   "per_class": {label: {"f1": f1, "precision": f1, "recall": f1, "support": 10},
                                 "dog": {"f1": f1 - 0.01, "precision": f1, "recall": f1, "support": 10}},
                   "per_slice": {"short": {"n": 8, "accuracy": acc, "f1_macro": f1}}}
    v.capability = {"log_loss": 0.3 + (0.9 - acc), "ece": 0.02}
    v.size = {"bytes_on_disk": size, "weight_bytes": size - 700,
              "parameters": 1000, "nonzero_parameters": 1000, "compressed_bytes": size // 2}
    v.latency = [{"batch_size": b, "samples": 30, "p50_ms": p50 * b ** 0.5, "p90_ms": p50 * b ** 0.5 * 1.2,
                  "p99_ms": p50 * b ** 0.5 * 1.5, "mean_ms": p50, "stdev_ms": 0.01, "cv": 0.01,
                  "throughput_per_s": b / p50 * 1e3} for b in (1, 32)]
    v.fidelity = {"agreement": 1.0 if baseline else 0.97, "flips_right_to_wrong": 0 if baseline else 2,
                  "flips_wrong_to_right": 0 if baseline else 1, "kl_mean": 0.001,
                  "flipped": [] if baseline else [{"index": 3, "text": HOSTILE, "label": label, "baseline": label,
                                                   "variant": "dog", "kind": "right_to_wrong"}]}
    # Fields the upgraded harness adds; the report reads them with defaults.
    v.significance = {"deltas": {"f1_macro": {"delta": 0.0, "low": ci[0], "high": ci[1], "significant": False}}} \
        if ci else {}
    v.behavioral = {"pass_rate": 0.9, "by_type": {"INV": 0.9},
                    "regressions": [] if baseline else [{"id": "inv-1", "type": "INV", "description": HOSTILE}]}
    v.peak_rss_mb = 321.0
    if speedup is not None:
        v.speedup = [{"batch_size": b, "ratio": speedup[0], "low": speedup[1], "high": speedup[2], "rounds": 10}
                     for b in (1, 32)]
    return v


def fake_results(*, hostile: bool = False, int8_f1: float = 0.895, int8_p50: float = 0.5,
                 ci: tuple[float, float] | None = (-0.008, 0.002)) -> Results:
    """A baseline, a faster int8 variant within a 1-point budget, and a failed cell."""
    label = HOSTILE if hostile else "cat"
    name = HOSTILE if hostile else "int8"
    base = fake_row("baseline", f1=0.9, acc=0.9, p50=1.0, size=4_000_000, lineage=[], baseline=True, label=label)
    int8 = fake_row(name, f1=int8_f1, acc=int8_f1, p50=int8_p50, size=1_000_000,
                lineage=["export-onnx", "quantize:mode=dynamic"], ci=ci, label=label)
    broken = VariantResult(id="cell-x", name="broken", format="?", lineage=["test-raises"], parent=None,
                           status="failed", error=f"PassError: boom {HOSTILE}" if hostile else "PassError: boom")
    env: dict[str, Any] = {"cpu": {"model": HOSTILE if hostile else "Test CPU"}, "threads": 2,
                           "versions": {"optikit": "0.1.0"}}
    return results_of([base, int8, broken], label=label, environment=env)


def baseline_row() -> VariantResult:
    return fake_row("baseline", f1=0.9, acc=0.9, p50=1.0, size=4_000_000, lineage=[], baseline=True)


def results_of(variants: list[VariantResult], *, label: str = "cat", environment: dict[str, Any] | None = None) -> Results:
    """Results with `variants` (the first is the baseline) on a fake 20-example image task."""
    env = environment or {"cpu": {"model": "Test CPU"}, "threads": 2, "versions": {"optikit": "0.1.0"}}
    return Results(variants=variants, baseline_id=variants[0].id,
                   task={"kind": "image", "label_names": [label, "dog"], "split": "test", "examples": 20},
                   environment=env, settings={"matrix": {"name": "fake", "f1_budget_points": 1.0}})


def ten_variants() -> Results:
    """A baseline and nine variants, three of which share one name and differ only in quantize's mode."""
    rows = [baseline_row()]
    for i, mode in enumerate(("static", "dynamic", "weight-only")):
        rows.append(fake_row("digits-cnn+export-onnx+quantize", f1=0.895 - i / 1000, acc=0.895, p50=0.5 + i / 10,
                             size=1_000_000, lineage=["export-onnx:opset=17", f"quantize:mode={mode},per_channel=True"],
                             ci=(-0.008, 0.002)))
        rows[-1].id = f"id-q{i}"
    for i in range(6):
        rows.append(fake_row(f"chain-{i}", f1=0.89 - i / 500, acc=0.89, p50=0.6 + i / 5, size=2_000_000 - i * 1000,
                             lineage=[f"prune-structured:amount=0.{i + 1}"], ci=(-0.02, 0.0)))
    return results_of(rows)
