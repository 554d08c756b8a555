"""The command line: a thin layer over optikit.api; user errors become one line and exit code 2."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from optikit import api
from optikit.api import MIN_SPEEDUP_ROUNDS, check_batch_sizes, require_output_dir
from optikit.errors import ConfigError, OptikitError

EXIT_USAGE = 2


def _split_cols(value: str | None) -> tuple[str, ...] | None:
    return tuple(c.strip() for c in value.split(",") if c.strip()) if value else None


def data_options(matrix_note: bool = False) -> Any:
    """The user's evaluation data, the same options on import, compress, bench and search."""
    where = "Variants: " if matrix_note else ""

    def decorate(fn: Any) -> Any:
        for option in reversed([
            click.option("--data", type=click.Path(path_type=Path), help=(
                "Matrix: data file for its file-reading teachers. " if matrix_note else "") +
                "Evaluation data: CSV, TSV, Parquet, JSON Lines, a datasets.save_to_disk folder or an image folder "
                "tree (class/*.png); for a moved variant, where its data is now (hash-checked)."),
            click.option("--test-data", type=click.Path(path_type=Path),
                         help=f"{where}Your own test set (same columns); validation and calibration come from --data."),
            click.option("--split-col", help=f"{where}A column naming each row's split: train, validation, test."),
            click.option("--text-cols", help=f"{where}Comma-separated text columns, joined by a space (e.g. title,description)."),
            click.option("--label-col", help=f"{where}The label column (e.g. tag)."),
            click.option("--image-col", help=f"{where}A column of image paths (relative to the table's folder)."),
            click.option("--labels", help=f"{where}Label names in output order, for a model whose config has none (a,b,c)."),
        ]):
            fn = option(fn)
        return fn
    return decorate


def _data_keys(test_data: Path | None, split_col: str | None, text_cols: str | None, label_col: str | None,
               image_col: str | None, labels: str | None) -> dict[str, Any]:
    keys = {"test_data": str(test_data) if test_data else None, "split_col": split_col,
            "text_cols": _split_cols(text_cols), "label_col": label_col, "image_col": image_col,
            "labels": _split_cols(labels)}
    return {k: v for k, v in keys.items() if v}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="optikit")
def cli() -> None:
    """Compress a trained classifier with passes and measure every variant against the original."""


@cli.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Report folder (default reports/<run>/).")
@click.option("--threads", type=click.IntRange(min=1), help="Inference threads (default: cores, at most 8).")
def demo(out: Path | None, threads: int | None) -> None:
    """Teach the embedded default (digits-cnn), export it to ONNX, quantize to int8, bench all three."""
    if out is not None:
        require_output_dir(out)
    results, paths = api.demo(out, threads=threads)
    api.print_table(results)
    click.echo(f"wrote {paths['json']}, {paths['csv']}, {paths['long_csv']}, {paths['md']}, {paths['html']}")


@cli.command()
@click.argument("recipe")
@click.option("--data", type=click.Path(path_type=Path), help="CSV or Parquet file for a text teacher.")
@click.option("--text-cols", help="Comma-separated text columns, joined by a space (e.g. title,description).")
@click.option("--label-col", help="The label column (e.g. tag).")
@click.option("--force", is_flag=True, help="Retrain even if a cached teacher matches.")
def teach(recipe: str, data: Path | None, text_cols: str | None, label_col: str | None, force: bool) -> None:
    """Train a teacher from a recipe name (`optikit teachers`) or a recipe .toml."""
    variant = api.teach(recipe, data, text_cols=_split_cols(text_cols), label_col=label_col, force=force)
    acc = variant.report.get("test_accuracy")
    click.echo(f"{variant.name} ({variant.format}) test accuracy {acc:.4f}" if acc is not None else variant.name)
    click.echo(str(variant.path))


@cli.command(name="import")
@click.argument("model")
@data_options()
def import_(model: str, data: Path | None, test_data: Path | None, split_col: str | None, text_cols: str | None,
            label_col: str | None, image_col: str | None, labels: str | None) -> None:
    """Import your own classifier (a Hugging Face save_pretrained folder, an .onnx file or folder, a cached hub id)
    as a baseline variant measured on your data; prints the variant's folder. Your files are only read."""
    variant = api.import_model(model, data, **_data_keys(test_data, split_col, text_cols, label_col, image_col, labels))
    splits = variant.splits
    click.echo(f"{variant.name} ({variant.format}, {variant.task.kind}, {len(variant.task.label_names)} labels: "
               f"{', '.join(variant.task.label_names)}); split by {splits.rule}: {len(splits.train)} train, "
               f"{len(splits.validation)} validation, {len(splits.test)} test")
    click.echo(str(variant.path))


@cli.command()
@click.argument("model", required=False)
@click.option("--pass", "pass_specs", multiple=True, required=True, metavar="NAME[:key=value,…]",
              help="A pass to run; repeat for a chain (left to right).")
@data_options()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the variants (default ~/.cache/optikit/variants).")
@click.option("--threads", type=click.IntRange(min=1))
def compress(model: str | None, pass_specs: tuple[str, ...], data: Path | None, test_data: Path | None,
             split_col: str | None, text_cols: str | None, label_col: str | None, image_col: str | None,
             labels: str | None, out: Path | None, threads: int | None) -> None:
    """Run a chain of passes on MODEL: your own model (Hugging Face folder, .onnx, cached hub id), a variant
    directory, or a teacher name (default: digits-cnn)."""
    if out is not None:
        require_output_dir(out)
    keys = _data_keys(test_data, split_col, text_cols, label_col, image_col, labels)
    produced = api.compress_chain(model, list(pass_specs), data=data, out=out, threads=threads, **keys)
    for v in produced:
        auto = " (added: the next pass needs ONNX)" if v.lineage and v.lineage[-1].auto else ""
        click.echo(f"{v.name}{auto}\n  {v.path}")


EXIT_GATE = 1  # a gate rule or a cell failed: the run worked, the result is not good enough

# An option of `bench` applies to both forms (models, or one matrix) unless listed here; a listed option given to
# the other form is refused in one line, never dropped.
_BY_PATH = "bench the variants by path instead: optikit bench BASELINE VARIANT… "
VARIANTS_ONLY = {
    **{k: "in a matrix, set it on the [[teachers]] entry"
       for k in ("test_data", "split_col", "text_cols", "label_col", "image_col", "labels")},
    "suite": "a matrix's cells run the built-in suite for their task; " + _BY_PATH + "--suite …",
    "slices": "a matrix's cells report the built-in slices; " + _BY_PATH + "--slice …",
    "resamples": "a matrix's cells use the default; " + _BY_PATH + "--resamples …",
    "seed": "a matrix's cells use the default; " + _BY_PATH + "--seed …",
    "speedup_rounds": "a matrix's cells use the default; " + _BY_PATH + "--speedup-rounds …",
    "pad_to": "a matrix's cells pad each batch to its longest text; " + _BY_PATH + "--pad-to …",
    "no_isolate": "a matrix always runs each cell in its own process",
}
MATRIX_ONLY = ("gate", "allow_noisy", "resume", "executor", "address", "variant_names", "pass_names")


def _given(ctx: click.Context) -> dict[str, str]:
    """The options typed on the command line (a default is not a choice), by name → the flag as typed in help."""
    typed = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    return {p.name: p.opts[0] for p in ctx.command.params
            if isinstance(p, click.Option) and p.name and ctx.get_parameter_source(p.name) in typed}


def _check_bench_options(given: dict[str, str], matrix: bool, executor: str, out: Path | None) -> None:
    """Refuses, in one line each, an option that the form of `bench` given would otherwise drop."""
    for name, flag in given.items():
        if matrix and name in VARIANTS_ONLY:
            raise ConfigError(f"{flag} applies to models named on the command line, not a matrix: {VARIANTS_ONLY[name]}")
        if not matrix and name in MATRIX_ONLY:
            raise ConfigError(f"{flag} needs a matrix file: optikit bench MATRIX.toml {flag} …")
    for name in ("tracking_uri", "experiment"):
        if name in given and "track" not in given:
            raise ConfigError(f"{given[name]} needs --track mlflow")
    if "address" in given and executor != "ray":
        raise ConfigError("--address needs --executor ray")
    if matrix and "resume" in given and out is None:
        raise ConfigError("--resume needs the --out folder of the run to resume")


@cli.command()
@click.argument("models", nargs=-1, required=True, metavar="MATRIX.toml | MODEL...")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Report folder (default reports/<run>/).")
@click.option("--threads", type=click.IntRange(min=1))
@click.option("--batch-size", "batch_sizes", multiple=True, type=click.IntRange(min=1), help="Repeatable; default 1 and 32.")
@click.option("--min-seconds", type=click.FloatRange(min=0), default=None,
              help=f"Timing per batch size (default {api.DEFAULT_MIN_SECONDS:g}).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--fail-fast", is_flag=True, help="Stop at the first failed variant or matrix cell.")
@click.option("--gate", is_flag=True, help="Matrix: exit 1 when a gate rule fails, naming each rule.")
@click.option("--allow-noisy", is_flag=True,
              help="Matrix, --gate: pass even when a variant was timed on a starved machine or its timings contradict "
                   "each other (the report still says so).")
@click.option("--resume", is_flag=True, help="Matrix: rerun only cells without a finished record in --out.")
@click.option("--variant", "variant_names", multiple=True, metavar="NAME",
              help="Matrix: run only this named variant (repeatable; the baseline always runs).")
@click.option("--pass", "pass_names", multiple=True, metavar="NAME",
              help="Matrix: run only the variants whose chain uses this pass (repeatable; adds to --variant).")
@data_options(matrix_note=True)
@click.option("--suite", default="auto", show_default=True,
              help="Variants: behavioural suite: auto, none, a built-in name or a suite file.")
@click.option("--slice", "slices", multiple=True, help="Variants: a data slice to report, e.g. tag=mlops or words<20.")
@click.option("--resamples", type=click.IntRange(min=100), default=1000, show_default=True,
              help="Variants: paired-bootstrap resamples for the confidence intervals.")
@click.option("--seed", type=int, default=0, show_default=True, help="Variants: seed of the bootstrap and round order.")
@click.option("--speedup-rounds", type=click.IntRange(min=MIN_SPEEDUP_ROUNDS), default=20, show_default=True,
              help=f"Variants: interleaved baseline/variant rounds behind each speedup interval "
                   f"(at least {MIN_SPEEDUP_ROUNDS}).")
@click.option("--pad-to", type=click.IntRange(min=2), help="Variants: fixed-shape mode, pad every text batch to N tokens.")
@click.option("--min-iterations", type=click.IntRange(min=3), default=30, show_default=True,
              help="Timed calls per batch size, at least (a matrix: overrides its [latency] min_iterations).")
@click.option("--processes", type=click.IntRange(min=1), default=None,
              help="Time each variant's latency in N fresh processes and pool them (steadier figures; default 1).")
@click.option("--no-isolate", is_flag=True, help="Variants: measure in this process (debugging; default one process each).")
@click.option("--track", type=click.Choice(["mlflow"]), help="Log a run per variant, nested under one run (MLflow).")
@click.option("--tracking-uri", help="--track: MLflow tracking URI (default: sqlite:///OUT/mlflow.db).")
@click.option("--experiment", default="optikit", show_default=True, help="--track: MLflow experiment name.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Matrix: run cells one after another here, or as Ray tasks.")
@click.option("--address", help="Matrix, --executor ray: the cluster: HOST:PORT as `ray start --head` printed, auto, "
                                "or ray://HEAD:10001; a token-auth cluster also needs RAY_AUTH_MODE=token and "
                                "RAY_AUTH_TOKEN in the environment.")
def bench(models: tuple[str, ...], out: Path | None, threads: int | None, batch_sizes: tuple[int, ...],
          min_seconds: float | None, device: str, fail_fast: bool, gate: bool, allow_noisy: bool, resume: bool,
          variant_names: tuple[str, ...], pass_names: tuple[str, ...], data: Path | None,
          test_data: Path | None, split_col: str | None, text_cols: str | None, label_col: str | None,
          image_col: str | None, labels: str | None, suite: str, slices: tuple[str, ...], resamples: int, seed: int,
          speedup_rounds: int, pad_to: int | None,
          min_iterations: int, processes: int | None, no_isolate: bool, track: str | None, tracking_uri: str | None,
          experiment: str, executor: str, address: str | None) -> None:
    """Run a benchmark matrix (MATRIX.toml), or measure models and variants (the first is the baseline; your own
    model is imported on first use, with the data of the variants named beside it unless --data is given).

    Writes results.json, results.csv, summary.md and report.html. An option that does not apply to the form given
    is refused (exit 2), never ignored.
    """
    given = _given(click.get_current_context())
    is_matrix = len(models) == 1 and models[0].endswith(".toml")
    _check_bench_options(given, is_matrix, executor, out)
    # Before anything is measured: a folder that cannot be written would lose the measurements at the end.
    target = require_output_dir(out if out is not None else api.default_report_dir())
    check_batch_sizes(batch_sizes, "--batch-size")  # the test split bound waits for the data, inside api.bench
    tracking: dict[str, Any] = {"track": track, "tracking_uri": tracking_uri, "experiment": experiment}
    if is_matrix:
        matrix = api.load_matrix(models[0], data=data, variants=variant_names, passes=pass_names, threads=threads,
                                 batch_sizes=batch_sizes, min_seconds=min_seconds,
                                 min_iterations=min_iterations if "min_iterations" in given else None,
                                 processes=processes, device=device if "device" in given else None)
        if variant_names or pass_names:
            rules = ", ".join(r.name for r in matrix.gate) or "none"
            click.echo(f"narrowed to {', '.join(v.name for v in matrix.variants)} (gate rules: {rules})", err=True)
        outcome = api.bench_matrix(matrix, out, resume=resume, fail_fast=fail_fast, executor=executor,  # type: ignore[arg-type]
                                   address=address, echo=lambda s: click.echo(s, err=True), allow_noisy=allow_noisy,
                                   **tracking)
        _matrix_exit(outcome, fail_fast, gate)
        return
    keys = _data_keys(None, split_col, text_cols, label_col, image_col, labels)
    # Resolved here (not inside api.bench) because tracking logs each variant's manifest.
    resolved = api.resolve_bench_models(list(models), data, test_data, keys)
    results = api.bench(resolved, test_data=test_data, threads=threads, batch_sizes=batch_sizes or None,
                        min_seconds=api.DEFAULT_MIN_SECONDS if min_seconds is None else min_seconds, device=device,
                        fail_fast=fail_fast, suite=suite, slices=list(slices), resamples=resamples, seed=seed,
                        speedup_rounds=speedup_rounds, pad_to=pad_to, min_iterations=min_iterations,
                        isolate=not no_isolate, processes=processes or 1)
    paths = api.write_report(results, target)
    api.print_table(results)
    click.echo(f"wrote {paths['json']}, {paths['csv']}, {paths['long_csv']}, {paths['md']}, {paths['html']}")
    if track is not None:
        run_id = api.track_bench(results, paths, target, variants=resolved, tracking_uri=tracking_uri,
                                 experiment=experiment)
        click.echo(f"tracked as MLflow run {run_id}")


def _matrix_exit(outcome: Any, fail_fast: bool, gate: bool) -> None:
    """The summary on stdout; exit 1 for a cell that stopped a --fail-fast run or a failed --gate rule."""
    click.echo(outcome.paths["md"].read_text(encoding="utf-8"))
    click.echo(f"wrote {outcome.run.out}")
    if fail_fast and outcome.failed_cells:
        click.echo(f"optikit: stopped at the first failed cell: {outcome.failed_cells[0]}", err=True)
        sys.exit(EXIT_GATE)
    if gate and not outcome.gate_passed:
        for o in outcome.gate:
            if not o.passed:
                click.echo(f"optikit: gate rule {o.rule} failed: {o.detail}", err=True)
        sys.exit(EXIT_GATE)


@cli.command()
@click.argument("model", required=False, default="digits-cnn")
@click.option("--max-loss", type=click.FloatRange(0, 1, max_open=True), default=0.01, show_default=True,
              help="Loss budget as a fraction of the metric (0.01 = one point).")
@click.option("--metric", type=click.Choice(["f1_macro", "accuracy"]), default="f1_macro", show_default=True)
@click.option("--objective", type=click.Choice(["latency", "size"]), default="latency", show_default=True)
@click.option("--trials", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="The batch size whose latency is the objective (also measured: 1).")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--min-seconds", type=click.FloatRange(min=0), default=0.1, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@data_options()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Folder (default reports/<run>/); "
              "rerun with the same --out to reuse every measured trial.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True)
@click.option("--address", help="--executor ray: the cluster address.")
@click.option("--parallel", type=click.IntRange(min=1), default=2, show_default=True,
              help="--executor ray: trials run at once.")
def search(model: str, max_loss: float, metric: str, objective: str, trials: int, batch_size: int, threads: int,
           min_seconds: float, seed: int, data: Path | None, test_data: Path | None, split_col: str | None,
           text_cols: str | None, label_col: str | None, image_col: str | None, labels: str | None, out: Path | None,
           executor: str, address: str | None, parallel: int) -> None:
    """Search pass chains and settings (Optuna, latency or size vs loss) for MODEL; report the Pareto set and the
    best variant within --max-loss."""
    if out is not None:
        require_output_dir(out)
    outcome = api.search(model, out, max_loss=max_loss, metric=metric, objective=objective,  # type: ignore[arg-type]
                         trials=trials, batch_size=batch_size, threads=threads, min_seconds=min_seconds, seed=seed,
                         data=data, executor=executor, address=address, parallel=parallel,  # type: ignore[arg-type]
                         echo=lambda s: click.echo(s, err=True),
                         **_data_keys(test_data, split_col, text_cols, label_col, image_col, labels))
    click.echo(api.search_summary(outcome))


@cli.command()
@click.argument("results_path", metavar="RESULTS.json", type=click.Path(path_type=Path), required=False)
@click.option("--against", type=click.Path(path_type=Path), metavar="OLD.json",
              help="An earlier results.json: show what got better or worse.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for report.html and summary.md (default beside RESULTS; with --live, reports/<run>/).")
@click.option("--budget", type=click.FloatRange(min=0), help="Macro-F1 loss budget in points for the verdict.")
@click.option("--live", "live_log", metavar="LOG", help="Report an `optikit serve` request log (a path or a URL) "
              "instead: the same comparison, on the traffic it served.")
def report(results_path: Path | None, against: Path | None, out: Path | None, budget: float | None,
           live_log: str | None) -> None:
    """Re-render report.html and summary.md from a saved results.json (nothing is re-run), or write the report of
    a live request log (--live LOG)."""
    if live_log is not None:
        if results_path is not None or against is not None or budget is not None:
            raise ConfigError("--live takes the log alone: optikit report --live LOG [--out DIR]")
        paths = api.write_live_report(live_log, require_output_dir(out if out is not None else api.default_report_dir()))
        click.echo(paths["md"].read_text(encoding="utf-8"))
        click.echo(str(paths["html"]))
        return
    if results_path is None:
        raise ConfigError("report needs RESULTS.json (a bench run's results) or --live LOG (a serve request log)")
    if out is not None:
        require_output_dir(out)
    paths = api.render_report(results_path, against=against, out=out, budget_points=budget)
    click.echo(paths["md"].read_text(encoding="utf-8"))
    click.echo(str(paths["html"]))


@cli.command()
@click.argument("baseline")
@click.option("--shadow", metavar="VARIANT",
              help="Run VARIANT beside the baseline on every request; serve the baseline's answer.")
@click.option("--canary", metavar="VARIANT", help="Serve VARIANT to a sticky share of users (--percent, --ramp).")
@click.option("--ab", metavar="VARIANT", help="A/B test VARIANT against the baseline: a sticky 50/50 split.")
@click.option("--percent", type=click.FloatRange(0, 100), help="Canary: share of users the candidate serves (e.g. 5).")
@click.option("--ramp", metavar="P1,P2,…", help="Canary: percents to step through while guardrails hold (1,5,25,50,100).")
@click.option("--step-requests", type=click.IntRange(min=1), help="Canary: candidate-served requests per ramp step (200).")
@click.option("--mirror-percent", type=click.FloatRange(0, 100),
              help="Canary: share of baseline-served requests also run on the candidate, for agreement (10).")
@click.option("--bandit", type=click.Choice(["none", "thompson"]), help="A/B: Thompson sampling on feedback (none).")
@click.option("--guardrail", "guardrail_items", multiple=True, metavar="NAME=VALUE",
              help="Canary guardrail (repeatable): min_agreement, max_error_rate, max_p99_ratio, max_accuracy_drop, "
                   "min_samples.")
@click.option("--shadow-queue", type=click.IntRange(min=1),
              help="Off-path calls waiting at most; when full, a mirrored call is dropped and counted (256).")
@click.option("--log", "log_target", default="optikit-serve.db", show_default=True, metavar="PATH|URL",
              help="The request log: a SQLite file, or a SQLAlchemy URL (postgresql://…).")
@click.option("--log-inputs", is_flag=True, help="Log the texts (images) themselves, not only their hash.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (the API has no auth).")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), help="Inference threads per model.")
@click.option("--max-batch", type=click.IntRange(min=1), default=64, show_default=True,
              help="Examples in one /predict call at most.")
@click.option("--replicas", type=click.IntRange(min=1), default=1, show_default=True, help="--engine ray: app replicas.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True)
@click.option("--address", help="--engine ray: the Ray cluster (default: a local one).")
@data_options()
def serve(baseline: str, shadow: str | None, canary: str | None, ab: str | None, percent: float | None,
          ramp: str | None, step_requests: int | None, mirror_percent: float | None, bandit: str | None,
          guardrail_items: tuple[str, ...], shadow_queue: int | None, log_target: str, log_inputs: bool, host: str,
          port: int, threads: int | None, max_batch: int, replicas: int, engine: str, address: str | None,
          data: Path | None, test_data: Path | None, split_col: str | None, text_cols: str | None,
          label_col: str | None, image_col: str | None, labels: str | None) -> None:
    """Serve BASELINE over HTTP (/predict, /feedback, /health, /metrics, /report), alone or with a candidate in
    shadow, canary or A/B mode; every answer is logged (--log) before it is sent."""
    api.check_serve_engine(engine, replicas, address)
    plan, candidate_spec = api.serve_plan({"shadow": shadow, "canary": canary, "ab": ab},
                                          {"percent": percent, "ramp": ramp, "step_requests": step_requests,
                                           "mirror_percent": mirror_percent, "bandit": bandit,
                                           "shadow_queue": shadow_queue})
    keys = _data_keys(None, split_col, text_cols, label_col, image_col, labels)
    specs = [baseline] + ([candidate_spec] if candidate_spec else [])
    resolved = api.resolve_bench_models(specs, data, test_data, keys)
    api.serve(resolved[0], resolved[1] if len(resolved) > 1 else None, plan, guardrails=guardrail_items,
              engine=engine, replicas=replicas, address=address, echo=click.echo,
              warn=lambda line: click.echo(line, err=True), host=host, port=port, log=log_target,
              log_inputs=log_inputs, max_batch=max_batch, threads=threads)


@cli.command()
@click.argument("source", metavar="LOG|CSV")
@click.option("--to", "url", required=True, metavar="URL", help="The `optikit serve` to send to, e.g. http://127.0.0.1:8000.")
@click.option("--rps", type=click.FloatRange(min=0, min_open=True), required=True, help="Requests per second.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), required=True,
              help="Seconds at most; the replay also stops when the rows run out (unless --loop).")
@click.option("--text-cols", help="A table's comma-separated text columns, joined by a space (e.g. title,description).")
@click.option("--label-col", help="A table's label column (for --feedback).")
@click.option("--feedback", is_flag=True, help="Send each answered id's true label to /feedback.")
@click.option("--user-col", help="A column whose value is each row's user key (X-User-Key); default: 100 users.")
@click.option("--users", type=click.IntRange(min=1), default=100, show_default=True,
              help="Without --user-col: rows are spread over this many sticky users.")
@click.option("--concurrency", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--loop", is_flag=True, help="Cycle the rows until --duration.")
@click.option("--seed", type=int, default=0, show_default=True, help="Shuffle the rows (0 keeps the file's order).")
def replay(source: str, url: str, rps: float, duration: float, text_cols: str | None, label_col: str | None,
           feedback: bool, user_col: str | None, users: int, concurrency: int, loop: bool, seed: int) -> None:
    """Send a table's rows (or a request log's logged inputs) to `optikit serve` at a fixed rate, and stop by
    itself; only the --to URL is ever contacted."""
    stats = api.replay(source, url, rps=rps, duration=duration, text_cols=_split_cols(text_cols) or (),
                       label_col=label_col, feedback=feedback, user_col=user_col, users=users,
                       concurrency=concurrency, seed=seed, loop=loop)
    click.echo(stats.summary())
    if stats.sent and not stats.answered:
        raise OptikitError(f"none of the {stats.sent} requests to {url} was answered: start `optikit serve` there "
                           "first, or check --to")


@cli.command(name="passes")
def list_passes() -> None:
    """List registered passes with their options."""
    for p in api.list_passes():
        click.echo(f"{p.name}: {p.summary}  [takes {', '.join(p.accepts)}]")
        for opt, kind, default in p.options:
            click.echo(f"    {opt} ({kind}) = {default}")


@cli.command()
def teachers() -> None:
    """List built-in teacher recipes."""
    for name, description in api.list_recipes("teachers"):
        click.echo(f"{name}: {description}")


@cli.command()
def students() -> None:
    """List built-in student recipes (for the distill pass)."""
    for name, description in api.list_recipes("students"):
        click.echo(f"{name}: {description}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: OptikitError → `optikit: error: …` on stderr and exit 2 (OPTIKIT_DEBUG=1 shows the traceback)."""
    api.quiet_libraries()
    try:
        cli.main(args=argv, prog_name="optikit", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("optikit: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except OptikitError as exc:
        if os.environ.get("OPTIKIT_DEBUG"):
            raise
        click.echo(f"optikit: error: {exc}", err=True)
        sys.exit(EXIT_USAGE)


if __name__ == "__main__":
    main()
