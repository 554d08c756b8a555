"""The public Python API; the CLI is a thin layer over these functions."""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from optikit._bounds import check_batch_sizes, check_threads, fit_batch_sizes
from optikit._places import require_output_dir, require_writable_home
from optikit._quiet import quiet_libraries
from optikit.errors import ConfigError, OptikitError
from optikit.harness.bench import BenchConfig
from optikit.harness.bench import bench as _bench
from optikit.harness.latency import DEFAULT_MIN_SECONDS, LatencyConfig
from optikit.harness.results import Results
from optikit.harness.significance import SignificanceConfig
from optikit.harness.timing import MIN_SPEEDUP_ROUNDS, SpeedupConfig
from optikit.importing import DataOptions, Detected, detect, with_data
from optikit.passes.base import Pass, PassContext, make_pass, plan_chain, run_chain
from optikit.progress import say
from optikit.runners import default_threads
from optikit.teach import optikit_home, resolve_model
from optikit.teach import teach as _teach
from optikit.variant import Variant, load_variant

if TYPE_CHECKING:
    from optikit.matrix import Matrix, MatrixOutcome
    from optikit.recipes import Recipe
    from optikit.search.study import SearchOutcome

__all__ = ["DEFAULT_MIN_SECONDS", "MIN_SPEEDUP_ROUNDS", "PassInfo", "bench", "bench_matrix", "check_batch_sizes",
           "compress", "compress_chain", "data_options", "default_report_dir", "demo", "import_model", "list_passes",
           "list_recipes", "load", "load_matrix", "print_table", "quiet_libraries", "render_report",
           "require_output_dir", "resolve_bench_models", "search", "search_summary", "teach", "track_bench",
           "write_html", "write_report"]

PassSpec = str | Pass | tuple[str, Mapping[str, Any]]
ModelSpec = str | Path | Variant | None


def load(path: str | Path) -> Variant:
    """Reads a variant directory written by optikit."""
    return load_variant(path)


def teach(recipe_or_name: str | Recipe, data: str | Path | None = None, *, text_cols: tuple[str, ...] | None = None,
          label_col: str | None = None, cache: Path | None = None, force: bool = False) -> Variant:
    """Trains (or reuses from the cache) the teacher of a recipe name or file and returns its Variant; the cache
    folder (OPTIKIT_HOME) is checked first, so an unwritable one is one line, not an error after training.

    Example:
        teacher = optikit.api.teach("digits-cnn")
        print(teacher.path, teacher.report["test_accuracy"])
    """
    if cache is None:
        require_writable_home(optikit_home())
    return _teach(recipe_or_name, data, text_cols=text_cols, label_col=label_col, cache=cache, force=force)


def _writes_home(model: Any, found: Detected | None) -> bool:
    """Whether resolving `model` may write under OPTIKIT_HOME: a teacher to train, a user's model to import (copied
    there), an in-memory module to save; a variant (object or folder) is only read."""
    if isinstance(model, Variant):
        return False
    return _is_module(model) or found is None or found.kind != "variant"


def _require_home_for(models: Sequence[Any], found: Sequence[Detected | None]) -> None:
    if any(_writes_home(m, f) for m, f in zip(models, found, strict=True)):
        require_writable_home(optikit_home())


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
    _require_home_for([model], [_on_disk(model)])
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


def _on_disk(model: Any) -> Detected | None:
    """What a model path holds (read, not imported); None for a Variant, an in-memory module or a teacher name."""
    if model is None or isinstance(model, Variant) or _is_module(model):
        return None
    from optikit.recipes import builtin_recipes

    text = str(_session_path(model))
    if text in builtin_recipes("teachers") or text.endswith(".toml"):
        return None
    return detect(text)


def _start_format(model: Any) -> str | None:
    """The format `model` will have, known without importing it, so a chain is checked before any work."""
    if isinstance(model, Variant):
        return model.format
    found = _on_disk(model)
    return found.format if found is not None else None


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
    threads = check_threads(threads)
    # Where the variants go is checked before any pass runs: an unwritable folder would fail after the work.
    workdir = require_output_dir(out, "out") if out else require_writable_home(optikit_home()) / "variants"
    chain = [make_pass(p) for p in passes]
    start = _start_format(model)
    if start is not None:
        plan_chain(start, chain)  # what the format cannot do is refused before the import reads any data
    source = _variant(model, data, module_options)
    plan_chain(source.format, chain)  # fail before any work on an order that cannot run
    ctx = PassContext(workdir, threads or default_threads(), seed)
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


DEFAULT_BATCH_SIZES = (1, 32)


def bench(variants: Sequence[ModelSpec], *, threads: int | None = None, batch_sizes: Sequence[int] | None = None,
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
    `batch_sizes` (default 1 and 32) may not exceed the test split nor MAX_BATCH_SIZE (4096); a default larger
    than a small test split is capped to it, with a note.

    Example:
        results = optikit.bench(["digits-cnn", int8], suite="digits", slices={"odd": lambda f: f.index % 2 == 1})
        print(results.to_frame()[["variant", "accuracy_delta", "quadrant"]])
    """
    chosen = batch_sizes is not None
    named = dict(slices) if isinstance(slices, Mapping) else {s: s for s in (slices or ())}
    # Every setting is checked before a model is resolved: resolving may train a teacher or import a model.
    sizes = check_batch_sizes(DEFAULT_BATCH_SIZES if batch_sizes is None else batch_sizes)
    config = BenchConfig(latency=LatencyConfig(batch_sizes=sizes, min_iterations=min_iterations, min_seconds=min_seconds),
                         speedup=SpeedupConfig(rounds=speedup_rounds, seed=seed),
                         significance=SignificanceConfig(resamples=resamples, seed=seed),
                         threads=check_threads(threads) or 0, device=device, pad_to=pad_to, suite=suite,
                         isolate=isolate, processes=processes)
    resolved = resolve_bench_models(variants, data, test_data, data_keys)
    test = None
    if test_data is not None:
        from optikit.datafiles import content_sha256

        if content_sha256(Path(test_data).expanduser()) == resolved[0].data.test_sha256:  # the recorded test set
            resolved = [with_data(resolved[0], data_options(test_data=test_data)), *resolved[1:]]
        else:
            test = _bench_test_set(resolved[0], test_data)
    examples = len(test) if test is not None else len(resolved[0].splits.test)
    sizes, note = fit_batch_sizes(config.latency.batch_sizes, examples, chosen=chosen)
    if note:
        say(note)
    config = replace(config, latency=replace(config.latency, batch_sizes=sizes))
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
    found = [_on_disk(m) for m in models]
    _require_home_for(models, found)
    # A variant directory is re-pointed by --data (hash-checked); --test-data at bench time replaces its test
    # split instead (see bench), so it is not a re-point here.
    is_variant = [isinstance(m, Variant) or (f is not None and f.kind == "variant") for m, f in zip(models, found, strict=True)]
    loaded = {i: (m if isinstance(m, Variant) else _variant(m, data, keys)) for i, m in enumerate(models) if is_variant[i]}
    inherited: DataOptions | None = None
    if not given and loaded:
        first = next(iter(loaded.values()))
        inherited = DataOptions.from_spec(first.data, first.splits.seed)
    out = []
    for i, m in enumerate(models):
        if i in loaded:
            out.append(loaded[i])
        elif inherited is not None and found[i] is not None:
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
    """A fresh report folder, `reports/<date-time>`, for a run given no output folder."""
    return Path(root) / datetime.now().strftime("%Y%m%d-%H%M%S")


def demo(out: str | Path | None = None, *, threads: int | None = None,
         min_seconds: float = DEFAULT_MIN_SECONDS) -> tuple[Results, dict[str, Path]]:
    """The whole job on the embedded default: teach digits-cnn, export to ONNX, int8, bench, write the report.

    Example:
        results, paths = optikit.demo("reports/demo")
        print(paths["md"].read_text())
    """
    threads = check_threads(threads)
    target = require_output_dir(out if out else default_report_dir(), "out")  # before the teacher is trained
    teacher = teach("digits-cnn")
    # `quantize` as a user types it: mode=auto picks static int8 for this convolutional graph.
    onnx_fp32, onnx_int8 = compress_chain(teacher, ["export-onnx", "quantize"], threads=threads)
    results = bench([teacher, onnx_fp32, onnx_int8], threads=threads, min_seconds=min_seconds)
    return results, write_report(results, target, title="optikit demo")


# Reports: the harness measures, the report package renders; these are the one way in from the API and the CLI.

def write_report(results: Results, out: str | Path, *, title: str = "optikit bench", against: Results | None = None,
                 against_name: str | None = None, budget_points: float | None = None,
                 write_json: bool = True) -> dict[str, Path]:
    """Writes results.json, results.csv, results-long.csv, summary.md and report.html under `out`; returns their
    paths by kind (json, csv, long_csv, md, html). `against` (an earlier run's Results) adds what got better or worse since then.
    results.json is written first: when a later file fails, the measurements are on disk and the error says where.

    Example:
        paths = optikit.write_report(results, "reports/mine")
        print(paths["md"].read_text())
    """
    from optikit._io import write_json_atomic
    from optikit.report.outputs import write_outputs

    target = Path(out)
    saved = target / "results.json"
    if write_json:
        write_json_atomic(saved, results.to_dict())
    try:
        return write_outputs(results, target, against=against, against_name=against_name,
                             budget_points=budget_points, title=title, write_json=False)
    except Exception as exc:
        if not saved.is_file():
            raise
        where = f"the results are saved in {saved}: `optikit report {saved}` writes the other files once that is fixed"
        if isinstance(exc, OSError):  # the folder or the disk, not optikit: one line, as for any user error
            raise OptikitError(f"cannot write the report in {target} ({exc.strerror or exc}); {where}") from None
        exc.add_note(where)  # a bug keeps its traceback, and says the measurements are safe
        raise


def write_html(results: Results, path: str | Path) -> Path:
    """Writes the self-contained HTML report of `results` to `path` alone (no other file).

    Example:
        optikit.write_html(optikit.bench(["digits-cnn", int8]), "report.html")
    """
    from optikit._io import write_text_atomic
    from optikit.report.html import render_html

    write_text_atomic(Path(path), render_html(results))
    return Path(path)


def render_report(results_path: str | Path, *, against: str | Path | None = None, out: str | Path | None = None,
                  budget_points: float | None = None) -> dict[str, Path]:
    """Re-renders summary.md and report.html (and results.csv) from a saved results.json; nothing is re-run.

    `against`: an earlier results.json, to show what got better or worse. `out` defaults to the folder of
    `results_path` (whose results.json is then left as it is); `budget_points`: the verdict's macro-F1 budget.

    Example:
        paths = optikit.api.render_report("reports/pr/results.json", against="reports/main/results.json")
        print(paths["md"].read_text())
    """
    results_path = Path(results_path)
    results = Results.load(results_path)
    old = Results.load(against) if against else None
    target = require_output_dir(Path(out) if out else results_path.parent, "out")
    return write_report(results, target, against=old, against_name=str(against) if against else None,
                        budget_points=budget_points, write_json=target.resolve() != results_path.parent.resolve())


def print_table(results: Results) -> None:
    """Prints the terminal table of `optikit bench` (one row per variant, notes below it).

    Example:
        optikit.api.print_table(optikit.bench(["digits-cnn", int8]))
    """
    from optikit.report.table import print_table as _print

    _print(results)


# What is registered: passes and recipes.

@dataclass(frozen=True)
class PassInfo:
    """A registered pass as `optikit passes` lists it: its options are (name, type, default) triples."""

    name: str
    summary: str
    accepts: tuple[str, ...]  # the variant formats it takes
    options: tuple[tuple[str, str, str], ...]


def list_passes() -> list[PassInfo]:
    """Every registered pass (built-ins and plugins), in registry order.

    Example:
        for p in optikit.api.list_passes():
            print(p.name, [name for name, _, _ in p.options])
    """
    from optikit.config import describe_options
    from optikit.passes import passes

    return [PassInfo(name, cls.summary, tuple(sorted(cls.accepts)), tuple(describe_options(cls.Config)))
            for name, cls in passes]


def list_recipes(kind: Literal["teachers", "students"] = "teachers") -> list[tuple[str, str]]:
    """(name, description) of each built-in teacher recipe, or student recipe (for the distill pass).

    Example:
        print(dict(optikit.api.list_recipes("students")))
    """
    from optikit.recipes import builtin_recipes, load_recipe

    return [(name, load_recipe(name, kind).description) for name in sorted(builtin_recipes(kind))]


# Benchmark matrices.

def load_matrix(path: str | Path, *, data: str | Path | None = None, variants: Sequence[str] = (),
                passes: Sequence[str] = (), threads: int | None = None, batch_sizes: Sequence[int] = (),
                min_seconds: float | None = None, min_iterations: int | None = None, processes: int | None = None,
                device: str | None = None) -> Matrix:
    """A matrix file, narrowed and with settings overridden, so one file serves a quick local look and the full
    CI run. `variants` keeps the named variants and `passes` those whose chain uses one of them (the baseline is
    always kept; gate rules about dropped variants go with them); `data` replaces the data of every teacher that
    reads a file. Any setting left None (or empty) keeps the file's own.

    Example:
        matrix = optikit.api.load_matrix("benchmarks/ci.toml", passes=["quantize"], threads=1)
        print([v.name for v in matrix.variants])  # baseline and the three chains that quantize
    """
    from optikit.matrix import load_matrix as _load
    from optikit.matrix import with_data
    from optikit.matrix.spec import narrow

    threads = check_threads(threads)
    batch_sizes = check_batch_sizes(batch_sizes)
    matrix = narrow(with_data(_load(path), str(data) if data else None), tuple(variants), tuple(passes))
    lat = matrix.latency
    latency = replace(lat, min_seconds=lat.min_seconds if min_seconds is None else min_seconds,
                      min_iterations=min_iterations or lat.min_iterations, processes=processes or lat.processes)
    return replace(matrix, latency=latency, threads=threads or matrix.threads,
                   batch_sizes=tuple(batch_sizes) or matrix.batch_sizes, devices=(device,) if device else matrix.devices)


def bench_matrix(matrix: Matrix | str | Path, out: str | Path | None = None, *, resume: bool = False,
                 fail_fast: bool = False, executor: Literal["local", "ray"] = "local", address: str | None = None,
                 track: Literal["mlflow"] | None = None, tracking_uri: str | None = None, experiment: str = "optikit",
                 echo: Callable[[str], None] | None = None, allow_noisy: bool = False) -> MatrixOutcome:
    """Runs every cell of `matrix` (a Matrix from `load_matrix`, or a file) into `out` (default reports/<run>/),
    each in its own process and cached by content, then writes the report and evaluates the gate rules.

    `resume` reruns only the cells without a finished record in `out`; `executor="ray"` runs cells as Ray tasks
    (`address`: the cluster); `track="mlflow"` logs a parent run and a run per variant (`tracking_uri`, default a
    SQLite file in `out`). `echo` receives a line per cell. The gate also fails when a variant was timed on a
    starved machine or its figures contradict each other, unless `allow_noisy`.

    Example:
        outcome = optikit.api.bench_matrix(optikit.api.load_matrix("benchmarks/ci.toml", variants=["onnx"]), "reports/ci")
        print(outcome.gate_passed, outcome.paths["md"])
    """
    from optikit.matrix import ExecutorConfig
    from optikit.matrix import bench_matrix as _run

    if resume and out is None:
        raise ConfigError("resume needs the output folder of the run to resume")
    if (tracking_uri is not None or experiment != "optikit") and track is None:
        raise ConfigError("tracking_uri and experiment need track='mlflow'")
    target = require_output_dir(out if out else default_report_dir(), "out")
    require_writable_home(optikit_home())  # every cell trains or reuses its teacher there
    return _run(matrix, target, resume=resume, fail_fast=fail_fast,
                echo=echo or (lambda s: None), executor=ExecutorConfig(executor, address),
                tracking=_tracking(track, tracking_uri, experiment), allow_noisy=allow_noisy)


def _tracking(track: str | None, tracking_uri: str | None, experiment: str) -> Any:
    if track is None:
        return None
    if track != "mlflow":
        raise ConfigError(f"track must be 'mlflow', got {track!r}")
    from optikit.tracking.mlflow import TrackingConfig

    return TrackingConfig(tracking_uri, experiment)


def track_bench(results: Results, paths: Mapping[str, Path], out: str | Path, *, variants: Sequence[Variant] = (),
                tracking_uri: str | None = None, experiment: str = "optikit", run_name: str = "bench") -> str:
    """Logs a bench to MLflow: one parent run (settings, the report files in `paths`) and a nested run per
    variant, whose manifest is read from `variants` (matched by id). Returns the parent run's id.

    Example:
        paths = optikit.write_report(results, "reports/mine")
        run_id = optikit.api.track_bench(results, paths, "reports/mine", variants=[teacher, int8])
    """
    tracking = _tracking("mlflow", tracking_uri, experiment)
    from optikit.tracking.mlflow import track

    where = {v.id: str(v.path) for v in variants}
    return track({run_name: results}, paths, Path(out), config=tracking, run_name=run_name,
                 variant_paths={run_name: {r.name: where.get(r.id) for r in results.variants}})


# Search.

def search(model: str | Path = "digits-cnn", out: str | Path | None = None, *, max_loss: float = 0.01,
           metric: Literal["f1_macro", "accuracy"] = "f1_macro", objective: Literal["latency", "size"] = "latency",
           trials: int = 20, batch_size: int = 32, threads: int = 1, min_seconds: float = 0.1, seed: int = 0,
           data: str | Path | None = None, executor: Literal["local", "ray"] = "local", address: str | None = None,
           parallel: int = 1, echo: Callable[[str], None] | None = None, **data_keys: Any) -> SearchOutcome:
    """Searches pass chains and their settings (Optuna, `objective` against the loss of `metric`) for `model`;
    writes the report and search.json under `out` (rerun with the same `out` to reuse every measured trial).
    `max_loss` is a fraction (0.01 = one point); `data_keys` are those of `import_model` for the user's model.

    Example:
        outcome = optikit.api.search("digits-cnn", "reports/search", trials=8)
        print(optikit.api.search_summary(outcome))
    """
    from optikit.matrix import ExecutorConfig
    from optikit.search.study import SearchConfig
    from optikit.search.study import search as _search

    data_options(data, **data_keys)  # an unknown keyword is refused before any work
    check_threads(threads)
    check_batch_sizes([batch_size])
    target = require_output_dir(out if out else default_report_dir(), "out")
    _require_home_for([model], [_on_disk(model)])  # a teacher to train or a model to import is written there
    config = SearchConfig(model=str(model), max_loss=max_loss, metric=metric, objective=objective, trials=trials,
                          batch_size=batch_size, batch_sizes=tuple(sorted({1, batch_size})), threads=threads,
                          seed=seed, data=str(data) if data else None, parallel=parallel,
                          data_keys=tuple((k, v) for k, v in data_keys.items() if v))
    config = replace(config, latency=replace(config.latency, min_seconds=min_seconds))
    return _search(config, target, executor=ExecutorConfig(executor, address),
                   echo=echo or (lambda s: None))


def search_summary(outcome: SearchOutcome) -> str:
    """A few lines for the terminal: the Pareto set, the best variant within the budget, the files written.

    Example:
        print(optikit.api.search_summary(optikit.api.search("digits-cnn", trials=4)))
    """
    from optikit.search.study import SearchConfig, summary

    saved = outcome.results.settings["search"]["config"]
    return summary(outcome, SearchConfig(max_loss=saved["max_loss"], objective=saved["objective"]))


# Live traffic (`optikit serve`, `replay`, `report --live`): thin entries so the CLI and scripts reach the serving
# package through this API; each imports it on call (it needs the `serve` extra).
def serve_plan(modes: Mapping[str, str | None], options: Mapping[str, Any]) -> tuple[Any, str | None]:
    """The `ServePlan` for `--shadow V | --canary V | --ab V` and their options, and the candidate named (or None)."""
    from optikit.serve.run import serve_plan as plan

    return plan(modes, options)


def check_serve_engine(engine: str, replicas: int, address: str | None) -> None:
    """Refuses Ray options without `engine="ray"`; the CLI calls it before any model is resolved."""
    if engine != "ray" and (replicas > 1 or address):
        raise ConfigError("--replicas and --address need --engine ray")


def serve(baseline: Variant, candidate: Variant | None, plan: Any, *, guardrails: Sequence[str] = (),
          engine: str = "local", replicas: int = 1, address: str | None = None, echo: Any = print, warn: Any = print,
          **config: Any) -> None:
    """Serves `baseline` (and `candidate` per `plan`) over HTTP until interrupted; `config` holds `ServeConfig`'s
    fields (host, port, log, log_inputs, max_batch, threads), `guardrails` NAME=VALUE items."""
    from optikit.serve.app import ServeConfig
    from optikit.serve.run import parse_guardrails, serve_local

    check_serve_engine(engine, replicas, address)
    limits, settings = parse_guardrails(guardrails), ServeConfig(**config)
    if engine == "ray":
        from optikit.serve.ray_engine import serve_on_ray

        serve_on_ray(baseline, candidate, plan, limits, settings, replicas=replicas, address=address)
        return
    serve_local(baseline, candidate, plan, limits, settings, echo=echo, warn=warn)


def replay(source: str | Path, url: str, **options: Any) -> Any:
    """Sends a table's rows (or a serve log's logged inputs) to `url` at a fixed rate; returns the `ReplayStats`."""
    from optikit.serve.replay import replay as run

    return run(source, url, **options)


def write_live_report(log: str | Path, out: str | Path) -> dict[str, Path]:
    """The bench report (HTML, MD, JSON, CSV) of an `optikit serve` request log, written to `out`."""
    from optikit.serve.live import write_live_report as write

    return write(log, Path(out))
