"""The public Python API; the CLI is a thin layer over these functions."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from optikit.errors import ConfigError
from optikit.harness.bench import BenchConfig
from optikit.harness.bench import bench as _bench
from optikit.harness.latency import DEFAULT_MIN_SECONDS, LatencyConfig
from optikit.harness.results import Results
from optikit.harness.significance import SignificanceConfig
from optikit.harness.timing import SpeedupConfig
from optikit.passes.base import Pass, PassContext, make_pass, plan_chain, run_chain
from optikit.runners import default_threads
from optikit.teach import optikit_home, resolve_model, teach
from optikit.variant import Variant, load_variant

PassSpec = str | Pass | tuple[str, Mapping[str, Any]]
ModelSpec = str | Path | Variant | None


def load(path: str | Path) -> Variant:
    """Reads a variant directory written by optikit."""
    return load_variant(path)


def _is_module(model: Any) -> bool:
    # Duck-typed so that the API never imports torch for a path or a Variant.
    return callable(getattr(model, "state_dict", None)) and callable(getattr(model, "parameters", None))


def _variant(model: ModelSpec | Any, data: Any = None, module_options: Mapping[str, Any] | None = None) -> Variant:
    if _is_module(model):
        from optikit.integrations.modules import from_module

        if data is None:
            raise ConfigError("an in-memory model needs data=: 'digits', a CSV/Parquet path (with text_cols and "
                              "label_col) or an optikit Dataset")
        return from_module(model, data=data, **dict(module_options or {}))
    if module_options:
        raise ConfigError(f"{', '.join(module_options)}: only for an in-memory model (an nn.Module)")
    return model if isinstance(model, Variant) else resolve_model(model, data)


def compress_chain(model: ModelSpec | Any, passes: Sequence[PassSpec], *, data: Any = None,
                   out: str | Path | None = None, threads: int | None = None, seed: int = 0,
                   **module_options: Any) -> list[Variant]:
    """Runs `passes` in order on `model` and returns every variant produced (export steps added where needed).

    `model` may be an in-memory `nn.Module` or Hugging Face model: it is first saved as a teacher Variant by
    `optikit.from_module(model, data=data, **module_options)` (builder, builder_kwargs, tokenizer, label_names,
    text_cols, label_col, name).
    """
    chain = [make_pass(p) for p in passes]
    source = _variant(model, data, module_options)
    plan_chain(source.format, chain)  # fail before any work on an order that cannot run
    ctx = PassContext(Path(out) if out else optikit_home() / "variants", threads or default_threads(), seed)
    return run_chain(source, chain, ctx)


def compress(model: ModelSpec, passes: Sequence[PassSpec], **kwargs: Any) -> Variant:
    """The last variant of `compress_chain`: `optikit.compress("digits-cnn", ["quantize"])`.

    Example:
        int8 = optikit.compress("digits-cnn", ["quantize:mode=dynamic"])
        print(int8.path, int8.describe())
    """
    produced = compress_chain(model, passes, **kwargs)
    if produced:
        return produced[-1]
    options = {k: v for k, v in kwargs.items() if k not in ("data", "out", "threads", "seed")}
    return _variant(model, kwargs.get("data"), options)


def bench(variants: Sequence[ModelSpec], *, threads: int | None = None, batch_sizes: Sequence[int] = (1, 32),
          min_iterations: int = 30, min_seconds: float = DEFAULT_MIN_SECONDS, device: str = "cpu", pad_to: int | None = None,
          fail_fast: bool = False, suite: str = "auto", slices: Mapping[str, Any] | Sequence[str] | None = None,
          resamples: int = 1000, seed: int = 0, speedup_rounds: int = 20, isolate: bool = True,
          processes: int = 1, data: Any = None) -> Results:
    """Measures every variant against the first (the baseline) on the baseline's test split.

    `suite`: "auto", "none", a built-in suite name or a suite file (see optikit/suites/minilm-tags.toml).
    `slices`: spec strings (`["tag=mlops", "words<20"]`) or a mapping name → spec string or callable
    `fn(frame) -> bool mask`. `resamples` and `seed` drive the paired bootstrap; `speedup_rounds` the
    interleaved baseline/variant timing. `processes` > 1 times each variant's latency in that many fresh
    processes and pools them: steadier absolute figures where processes differ (the core they land on).

    Example:
        results = optikit.bench(["digits-cnn", int8], suite="digits", slices={"odd": lambda f: f.index % 2 == 1})
        print(results.to_frame()[["variant", "accuracy_delta", "quadrant"]])
    """
    resolved = [_variant(v) for v in variants]
    named = dict(slices) if isinstance(slices, Mapping) else {s: s for s in (slices or ())}
    config = BenchConfig(latency=LatencyConfig(batch_sizes=tuple(batch_sizes), min_iterations=min_iterations,
                                               min_seconds=min_seconds),
                         speedup=SpeedupConfig(rounds=speedup_rounds, seed=seed),
                         significance=SignificanceConfig(resamples=resamples, seed=seed),
                         threads=threads or 0, device=device, pad_to=pad_to, suite=suite, isolate=isolate,
                         processes=processes)
    return _bench(resolved, config, data=data, fail_fast=fail_fast, slices=named)


def default_report_dir(root: str | Path = "reports") -> Path:
    return Path(root) / datetime.now().strftime("%Y%m%d-%H%M%S")


def demo(out: str | Path | None = None, *, threads: int | None = None,
         min_seconds: float = DEFAULT_MIN_SECONDS) -> tuple[Results, dict[str, Path]]:
    """The whole job on the embedded default: teach digits-cnn, export to ONNX, int8, bench, write the report."""
    teacher = teach("digits-cnn")
    onnx_fp32, onnx_int8 = compress_chain(teacher, ["export-onnx", "quantize:mode=dynamic"], threads=threads)
    results = bench([teacher, onnx_fp32, onnx_int8], threads=threads, min_seconds=min_seconds)
    from optikit.report.outputs import write_outputs

    paths = write_outputs(results, Path(out) if out else default_report_dir(), title="optikit demo")
    return results, paths
