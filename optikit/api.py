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
from optikit.importing import DataOptions, detect, format_of, with_data
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


DATA_KEYS = ("test_data", "split_col", "text_cols", "label_col", "image_col", "labels")


def _session_path(model: Any) -> Any:
    """An onnxruntime.InferenceSession stands for the file it was created from."""
    path = getattr(model, "_model_path", None)
    if path is None and type(model).__name__ == "InferenceSession":
        raise ConfigError("this InferenceSession was built from bytes, not a file: pass the .onnx path instead")
    return path if path is not None else model


def data_options(data: Any = None, **options: Any) -> DataOptions:
    """DataOptions from API keywords (data=, test_data=, split_col=, text_cols=, label_col=, image_col=, labels=)."""
    unknown = set(options) - {*DATA_KEYS, "seed"}
    if unknown:
        raise ConfigError(f"unknown data option(s) {', '.join(sorted(unknown))}: known are data, {', '.join(DATA_KEYS)}")

    def names(value: Any) -> tuple[str, ...]:
        return tuple(c.strip() for c in value.split(",") if c.strip()) if isinstance(value, str) else tuple(value or ())

    return DataOptions(data=str(data) if data is not None else None,
                       test_data=str(options["test_data"]) if options.get("test_data") else None,
                       split_col=options.get("split_col"), text_cols=names(options.get("text_cols")),
                       label_col=options.get("label_col"), image_col=options.get("image_col"),
                       labels=names(options.get("labels")), seed=int(options.get("seed", 0)))


def _variant(model: ModelSpec | Any, data: Any = None, module_options: Mapping[str, Any] | None = None) -> Variant:
    module_options = dict(module_options or {})
    if _is_module(model):
        from optikit.integrations.modules import from_module

        if data is None:
            raise ConfigError("an in-memory model needs data=: 'digits', a data file path (with text_cols and "
                              "label_col) or an optikit Dataset")
        return from_module(model, data=data, **module_options)
    model = _session_path(model)
    data_keys = {k: module_options.pop(k) for k in list(module_options) if k in DATA_KEYS}
    if module_options:
        raise ConfigError(f"{', '.join(module_options)}: only for an in-memory model (an nn.Module)")
    if isinstance(model, Variant):
        return with_data(model, data_options(data, **data_keys)) if data is not None or data_keys else model
    return resolve_model(model, options=data_options(data, **data_keys))


def import_model(model: str | Path | Any, data: Any = None, **options: Any) -> Variant:
    """The user's own classifier as a baseline Variant: a Hugging Face save_pretrained folder, an .onnx file or
    folder, a cached hub id, an `onnxruntime.InferenceSession`, or an in-memory `nn.Module` / `PreTrainedModel`.

    Example:
        baseline = optikit.import_model("./my-model", data="train.csv", test_data="test.csv",
                                        text_cols=["title", "description"], label_col="tag")
    """
    return _variant(model, data, options)


def _start_format(model: Any) -> str | None:
    """The format `model` will have, known without importing it, so a chain is checked before any work."""
    if isinstance(model, Variant):
        return model.format
    if model is None or _is_module(model):
        return None
    from optikit.recipes import builtin_recipes

    text = str(_session_path(model))
    if text in builtin_recipes("teachers") or text.endswith(".toml"):
        return None
    return format_of(text)


def compress_chain(model: ModelSpec | Any, passes: Sequence[PassSpec], *, data: Any = None,
                   out: str | Path | None = None, threads: int | None = None, seed: int = 0,
                   **module_options: Any) -> list[Variant]:
    """Runs `passes` in order on `model` and returns every variant produced (export steps added where needed).

    `model` may be an in-memory `nn.Module` or Hugging Face model: it is first saved as a teacher Variant by
    `optikit.from_module(model, data=data, **module_options)` (builder, builder_kwargs, tokenizer, label_names,
    text_cols, label_col, name).
    """
    if isinstance(passes, str):
        raise ConfigError(f"passes must be a list of pass specs, e.g. [{passes!r}], not one string")
    chain = [make_pass(p) for p in passes]
    start = _start_format(model)
    if start is not None:
        plan_chain(start, chain)  # what the format cannot do is refused before the import reads any data
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
          processes: int = 1, data: Any = None, test_data: str | Path | None = None, **data_keys: Any) -> Results:
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
    resolved = resolve_bench_models(variants, data, test_data, data_keys)
    test = None
    if test_data is not None:
        from optikit.datafiles import content_sha256

        if content_sha256(Path(test_data).expanduser()) == resolved[0].data.test_sha256:  # the recorded test set
            resolved = [with_data(resolved[0], data_options(test_data=test_data)), *resolved[1:]]
        else:
            test = _bench_test_set(resolved[0], test_data)
    named = dict(slices) if isinstance(slices, Mapping) else {s: s for s in (slices or ())}
    config = BenchConfig(latency=LatencyConfig(batch_sizes=tuple(batch_sizes), min_iterations=min_iterations,
                                               min_seconds=min_seconds),
                         speedup=SpeedupConfig(rounds=speedup_rounds, seed=seed),
                         significance=SignificanceConfig(resamples=resamples, seed=seed),
                         threads=threads or 0, device=device, pad_to=pad_to, suite=suite, isolate=isolate,
                         processes=processes)
    return _bench(resolved, config, test=test, fail_fast=fail_fast, slices=named)


def resolve_bench_models(models: Sequence[ModelSpec | Any], data: Any = None, test_data: Any = None,
                         data_keys: Mapping[str, Any] | None = None) -> list[Variant]:
    """Variants first, then the user's raw models: a model given without data options takes the data of the
    variants made from it, so `bench ./model VARIANT` compares like with like."""
    if isinstance(models, str | Path):
        raise ConfigError(f"bench takes a list of models, e.g. [{str(models)!r}, …], not one path")
    keys = dict(data_keys or {})
    if not models:
        raise ConfigError("nothing to bench: give at least one model or variant")
    given = data is not None or bool(keys)

    def variant_dir(m: Any) -> bool:
        return not _is_module(m) and _start_format(m) is not None and detect(str(_session_path(m))).kind == "variant"

    # A variant directory is re-pointed by --data (hash-checked); --test-data at bench time replaces its test
    # split instead (see bench), so it is not a re-point here.
    loaded = {i: (m if isinstance(m, Variant) else _variant(m, data, keys)) for i, m in enumerate(models)
              if isinstance(m, Variant) or variant_dir(m)}
    inherited: DataOptions | None = None
    if not given and loaded:
        first = next(iter(loaded.values()))
        inherited = DataOptions.from_spec(first.data, first.splits.seed)
    out = []
    for i, m in enumerate(models):
        if i in loaded:
            out.append(loaded[i])
        elif inherited is not None and not _is_module(m) and _start_format(m) is not None:
            out.append(resolve_model(_session_path(m), options=inherited))
        else:
            out.append(_variant(m, data, {**keys, **({"test_data": test_data} if test_data else {})}))
    return out


def _bench_test_set(baseline: Variant, test_data: str | Path) -> Any:
    """The user's own test set named at bench time, read like the baseline's data (same columns, label order)."""
    from optikit.data import load_data

    spec = baseline.data
    if spec.source == "digits":
        raise ConfigError("--test-data needs a model measured on a data file, not the built-in digits")
    return load_data(test_data, text_cols=spec.text_cols, label_col=spec.label_col, image_col=spec.image_col,
                     label_names=baseline.task.label_names, image_size=spec.image_size, channels=spec.channels)


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
