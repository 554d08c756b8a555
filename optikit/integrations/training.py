"""After a training loop: the trained module → teacher Variant → pass chains → bench → report, in one call."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from optikit.harness.results import Results
from optikit.integrations.modules import DataArg, from_module
from optikit.variant import Variant


@dataclass(frozen=True)
class AfterTraining:
    """What `after_training` produced: the teacher, the last variant of each chain, the results and report files."""

    teacher: Variant
    variants: dict[str, Variant]
    results: Results
    paths: dict[str, Path] = field(default_factory=dict)

    def metrics(self, prefix: str = "optikit") -> dict[str, float]:
        """Headline figures per variant as flat `prefix/variant/figure` floats, for a logger or a Trainer."""
        return headline_metrics(self.results, prefix)


def headline_metrics(results: Results, prefix: str = "optikit") -> dict[str, float]:
    """Every measured variant's headline figures under the names MLflow logs them by (`tracking.variant_metrics`:
    `latency_ms.b32`, `speedup.b32`, `f1_macro_delta_points`, …), as `{prefix}/{display name}/{figure}`."""
    from optikit.harness.compare import display_names
    from optikit.tracking.mlflow import variant_metrics

    return {f"{prefix}/{name}/{key}": value
            for row, name in zip(results.variants, display_names(results.variants), strict=True)
            if row.measured for key, value in variant_metrics(row, results).items()}


def _chains(passes: Sequence[Any] | Mapping[str, Sequence[Any]]) -> dict[str, list[Any]]:
    if isinstance(passes, Mapping):
        return {str(k): list(v) for k, v in passes.items()}
    return {"+".join(str(p).split(":")[0] for p in passes) or "teacher": list(passes)}


def run_after_training(teacher: Variant, passes: Sequence[Any] | Mapping[str, Sequence[Any]], *,
                       out: str | Path | None = None, threads: int | None = None,
                       bench_options: Mapping[str, Any] | None = None, title: str = "optikit after training",
                       notes: Sequence[str] = ()) -> AfterTraining:
    """Runs each chain on `teacher`, benches the last variant of each against it, writes the report to `out`.

    `notes` go first in the results' data notes (`task.notes`), which the report prints."""
    from optikit import api
    from optikit.report.outputs import write_outputs

    variants: dict[str, Variant] = {}
    for name, chain in _chains(passes).items():
        if chain:
            produced = api.compress_chain(teacher, chain, threads=threads)
            variants[name] = produced[-1]
    options = {"threads": threads, **dict(bench_options or {})}
    results = api.bench([teacher, *variants.values()], **options)
    # The chain's name reads better in a report than teacher+pass+pass.
    results.variants[1:] = [replace(row, name=name) for row, name in zip(results.variants[1:], variants, strict=True)]
    if notes:
        results.task = replace(results.task, notes=tuple(dict.fromkeys([*notes, *results.task.notes])))
    paths = write_outputs(results, Path(out), title=title) if out else {}
    return AfterTraining(teacher, variants, results, paths)


def after_training(model: Any, passes: Sequence[Any] | Mapping[str, Sequence[Any]], *, data: DataArg,
                   out: str | Path | None = None, threads: int | None = None,
                   bench_options: Mapping[str, Any] | None = None, **module_options: Any) -> AfterTraining:
    """The hook for a plain PyTorch loop: call it when training ends.

    `passes` is one chain (`["export-onnx", "quantize"]`) or named chains (`{"int8": [...], "slim": [...]}`);
    `module_options` go to `from_module` (label_names, tokenizer, builder, builder_kwargs, text_cols, label_col,
    name); `bench_options` to `optikit.bench` (batch_sizes, min_seconds, suite, …).

    Example:
        outcome = after_training(model, ["quantize"], data="digits", builder="digits-cnn", out="reports/run")
        print(outcome.results.best(max_loss=0.01).name)
    """
    teacher = from_module(model, data=data, **module_options)
    return run_after_training(teacher, passes, out=out, threads=threads, bench_options=bench_options)
