"""The public Python API; the CLI is a thin layer over these functions."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from optikit.harness.bench import BenchConfig
from optikit.harness.bench import bench as _bench
from optikit.harness.latency import LatencyConfig
from optikit.harness.results import Results
from optikit.passes.base import Pass, PassContext, make_pass, plan_chain, run_chain
from optikit.runners import default_threads
from optikit.teach import optikit_home, resolve_model, teach
from optikit.variant import Variant, load_variant

PassSpec = str | Pass | tuple[str, Mapping[str, Any]]
ModelSpec = str | Path | Variant | None


def load(path: str | Path) -> Variant:
    """Reads a variant directory written by optikit."""
    return load_variant(path)


def _variant(model: ModelSpec, data: str | Path | None = None) -> Variant:
    return model if isinstance(model, Variant) else resolve_model(model, data)


def compress_chain(model: ModelSpec, passes: Sequence[PassSpec], *, data: str | Path | None = None,
                   out: str | Path | None = None, threads: int | None = None, seed: int = 0) -> list[Variant]:
    """Runs `passes` in order on `model` and returns every variant produced (export steps added where needed)."""
    chain = [make_pass(p) for p in passes]
    source = _variant(model, data)
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
    return produced[-1] if produced else _variant(model, kwargs.get("data"))


def bench(variants: Sequence[ModelSpec], *, threads: int | None = None, batch_sizes: Sequence[int] = (1, 32),
          min_iterations: int = 30, min_seconds: float = 1.0, device: str = "cpu", pad_to: int | None = None,
          fail_fast: bool = False) -> Results:
    """Measures every variant against the first (the baseline) on the baseline's test split."""
    resolved = [_variant(v) for v in variants]
    config = BenchConfig(latency=LatencyConfig(batch_sizes=tuple(batch_sizes), min_iterations=min_iterations,
                                               min_seconds=min_seconds),
                         threads=threads or 0, device=device, pad_to=pad_to)
    return _bench(resolved, config, fail_fast=fail_fast)


def default_report_dir(root: str | Path = "reports") -> Path:
    return Path(root) / datetime.now().strftime("%Y%m%d-%H%M%S")


def demo(out: str | Path | None = None, *, threads: int | None = None, min_seconds: float = 1.0) -> tuple[Results, dict[str, Path]]:
    """The whole job on the embedded default: teach digits-cnn, export to ONNX, int8, bench, write the report."""
    teacher = teach("digits-cnn")
    onnx_fp32, onnx_int8 = compress_chain(teacher, ["export-onnx", "quantize:mode=dynamic"], threads=threads)
    results = bench([teacher, onnx_fp32, onnx_int8], threads=threads, min_seconds=min_seconds)
    paths = results.write(Path(out) if out else default_report_dir())
    return results, paths
