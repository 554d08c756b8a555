"""Hand-built Results for report and gate tests: no model, no timing, every optional harness field present."""
from __future__ import annotations

from optikit.harness.latency import Latency
from optikit.harness.records import (
    Alignment,
    Behavioral,
    Capability,
    ClassScores,
    CpuInfo,
    Environment,
    Fidelity,
    Flip,
    Interval,
    MeasuredSpeedup,
    Regression,
    Significance,
    SliceScores,
    Task,
)
from optikit.harness.results import Results, VariantResult
from optikit.harness.size import Size

HOSTILE = "</script><img src=x onerror=alert(1)>"


def fake_row(name: str, *, f1: float, acc: float, p50: float, size: int, lineage: list[str], baseline: bool = False,
             ci: tuple[float, float] | None = None, label: str = "cat",
             speedup: tuple[float, float, float] | None = None, id: str | None = None) -> VariantResult:
    """One measured row; p50 is the batch-1 median (√batch longer at larger batches); `speedup` is an interleaved
    (ratio, low, high) at every batch size."""
    return VariantResult(
        id=id or f"id-{name}", name=name, format="onnx" if lineage else "torch", lineage=tuple(lineage),
        parent=None if baseline else "id-baseline", is_baseline=baseline,
        alignment=Alignment(accuracy=acc, f1_macro=f1, f1_weighted=f1,
                            per_class={label: ClassScores(f1, f1, f1, 10), "dog": ClassScores(f1, f1, f1 - 0.01, 10)},
                            per_slice={"short": SliceScores(8, acc, f1)}),
        capability=Capability(log_loss=0.3 + (0.9 - acc), ece=0.02),
        size=Size(size, size - 700, size // 2, 1000, 1000, 0),
        latency=tuple(Latency.from_dict({"batch_size": b, "samples": 30, "p50_ms": p50 * b ** 0.5,
                                         "p90_ms": p50 * b ** 0.5 * 1.2, "p99_ms": p50 * b ** 0.5 * 1.5,
                                         "mean_ms": p50, "stdev_ms": 0.01, "cv": 0.01,
                                         "throughput_per_s": b / p50 * 1e3}) for b in (1, 32)),
        fidelity=Fidelity(agreement=1.0 if baseline else 0.97, flips_right_to_wrong=0 if baseline else 2,
                          flips_wrong_to_right=0 if baseline else 1, kl_mean=0.001,
                          flipped=() if baseline else (Flip(3, HOSTILE, label, label, "dog", "right_to_wrong"),)),
        significance=Significance({"f1_macro": Interval(0.0, ci[0], ci[1], False)}) if ci else None,
        behavioral=Behavioral(pass_rate=0.9, by_type={"INV": 0.9},
                              regressions=() if baseline else (Regression("inv-1", "INV", HOSTILE),)),
        peak_rss_mb=321.0,
        speedup=() if speedup is None else tuple(MeasuredSpeedup(b, *speedup, 10, "faster") for b in (1, 32)))


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
    env = Environment(CpuInfo(HOSTILE if hostile else "Test CPU"), threads=2, versions={"optikit": "0.1.0"})
    return results_of([base, int8, broken], label=label, environment=env)


def baseline_row() -> VariantResult:
    return fake_row("baseline", f1=0.9, acc=0.9, p50=1.0, size=4_000_000, lineage=[], baseline=True)


def results_of(variants: list[VariantResult], *, label: str = "cat", environment: Environment | None = None) -> Results:
    """Results with `variants` (the first is the baseline) on a fake 20-example image task."""
    env = environment or Environment(CpuInfo("Test CPU"), threads=2, versions={"optikit": "0.1.0"})
    return Results(variants=variants, baseline_id=variants[0].id,
                   task=Task(kind="image", label_names=(label, "dog"), split="test", examples=20),
                   environment=env, settings={"matrix": {"name": "fake", "f1_budget_points": 1.0}})


def ten_variants() -> Results:
    """A baseline and nine variants, three of which share one name and differ only in quantize's mode."""
    rows = [baseline_row()]
    for i, mode in enumerate(("static", "dynamic", "weight-only")):
        rows.append(fake_row("digits-cnn+export-onnx+quantize", f1=0.895 - i / 1000, acc=0.895, p50=0.5 + i / 10,
                             size=1_000_000, lineage=["export-onnx:opset=17", f"quantize:mode={mode},per_channel=True"],
                             ci=(-0.008, 0.002), id=f"id-q{i}"))
    for i in range(6):
        rows.append(fake_row(f"chain-{i}", f1=0.89 - i / 500, acc=0.89, p50=0.6 + i / 5, size=2_000_000 - i * 1000,
                             lineage=[f"prune-structured:amount=0.{i + 1}"], ci=(-0.02, 0.0)))
    return results_of(rows)
