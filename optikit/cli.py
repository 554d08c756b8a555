"""The command line: a thin layer over optikit.api; user errors become one line and exit code 2."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from optikit.errors import OptikitError

EXIT_USAGE = 2


def _quiet_libraries() -> None:
    """Library chatter (exporter registration, deprecations) drowns the results a user ran us for."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(torch|onnxruntime|transformers)\..*")
    for name in ("torch.onnx", "torch._dynamo", "torch.export", "onnxscript", "transformers", "root"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models come from local paths or packages, never the hub


def _split_cols(value: str | None) -> tuple[str, ...] | None:
    return tuple(c.strip() for c in value.split(",") if c.strip()) if value else None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="optikit")
def cli() -> None:
    """Compress a trained classifier with passes and measure every variant against the original."""


@cli.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Report folder (default reports/<run>/).")
@click.option("--threads", type=click.IntRange(min=1), help="Inference threads (default: cores, at most 8).")
def demo(out: Path | None, threads: int | None) -> None:
    """Teach the embedded default (digits-cnn), export it to ONNX, quantize to int8, bench all three."""
    from optikit import api
    from optikit.report.table import print_table

    results, paths = api.demo(out, threads=threads)
    print_table(results)
    click.echo(f"wrote {paths['json']}, {paths['csv']}, {paths['html']}")


@cli.command()
@click.argument("recipe")
@click.option("--data", type=click.Path(path_type=Path), help="CSV or Parquet file for a text teacher.")
@click.option("--text-cols", help="Comma-separated text columns, joined by a space (e.g. title,description).")
@click.option("--label-col", help="The label column (e.g. tag).")
@click.option("--force", is_flag=True, help="Retrain even if a cached teacher matches.")
def teach(recipe: str, data: Path | None, text_cols: str | None, label_col: str | None, force: bool) -> None:
    """Train a teacher from a recipe name (`optikit teachers`) or a recipe .toml."""
    from optikit.teach import teach as run_teach

    variant = run_teach(recipe, data, text_cols=_split_cols(text_cols), label_col=label_col, force=force)
    acc = variant.report.get("test_accuracy")
    click.echo(f"{variant.name} ({variant.format}) test accuracy {acc:.4f}" if acc is not None else variant.name)
    click.echo(str(variant.path))


@cli.command()
@click.argument("model", required=False)
@click.option("--pass", "pass_specs", multiple=True, required=True, metavar="NAME[:key=value,…]",
              help="A pass to run; repeat for a chain (left to right).")
@click.option("--data", type=click.Path(path_type=Path), help="Data for a text teacher named as MODEL.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Folder for the variants (default ~/.cache/optikit/variants).")
@click.option("--threads", type=click.IntRange(min=1))
def compress(model: str | None, pass_specs: tuple[str, ...], data: Path | None, out: Path | None, threads: int | None) -> None:
    """Run a chain of passes on MODEL (a variant directory or a teacher name; default: digits-cnn)."""
    from optikit import api

    produced = api.compress_chain(model, list(pass_specs), data=data, out=out, threads=threads)
    for v in produced:
        auto = " (added: the next pass needs ONNX)" if v.lineage and v.lineage[-1].auto else ""
        click.echo(f"{v.name}{auto}\n  {v.path}")


@cli.command()
@click.argument("models", nargs=-1, required=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Report folder (default reports/<run>/).")
@click.option("--threads", type=click.IntRange(min=1))
@click.option("--batch-size", "batch_sizes", multiple=True, type=click.IntRange(min=1), help="Repeatable; default 1 and 32.")
@click.option("--min-seconds", type=click.FloatRange(min=0), default=1.0, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--fail-fast", is_flag=True)
def bench(models: tuple[str, ...], out: Path | None, threads: int | None, batch_sizes: tuple[int, ...],
          min_seconds: float, device: str, fail_fast: bool) -> None:
    """Measure variants (the first is the baseline) and write results.json, results.csv and report.html."""
    from optikit import api
    from optikit.report.table import print_table

    results = api.bench(list(models), threads=threads, batch_sizes=batch_sizes or (1, 32), min_seconds=min_seconds,
                        device=device, fail_fast=fail_fast)
    paths = results.write(out or api.default_report_dir())
    print_table(results)
    click.echo(f"wrote {paths['json']}, {paths['csv']}, {paths['html']}")


@cli.command()
@click.argument("results_path", metavar="RESULTS.json", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="HTML file (default beside RESULTS).")
def report(results_path: Path, out: Path | None) -> None:
    """Re-render the HTML report from a saved results.json."""
    from optikit.harness.results import Results

    results = Results.load(results_path)
    path = results.to_html(out or results_path.with_name("report.html"))
    click.echo(str(path))


@cli.command(name="passes")
def list_passes() -> None:
    """List registered passes with their options."""
    from optikit.config import describe_options
    from optikit.passes import passes

    for name, cls in passes:
        click.echo(f"{name}: {cls.summary}  [takes {', '.join(sorted(cls.accepts))}]")
        for opt, kind, default in describe_options(cls.Config):
            click.echo(f"    {opt} ({kind}) = {default}")


def _list_recipes(kind: Any) -> None:
    from optikit.recipes import builtin_recipes, load_recipe

    for name in sorted(builtin_recipes(kind)):
        recipe = load_recipe(name, kind)
        click.echo(f"{name}: {recipe.description}")


@cli.command()
def teachers() -> None:
    """List built-in teacher recipes."""
    _list_recipes("teachers")


@cli.command()
def students() -> None:
    """List built-in student recipes (for the distill pass)."""
    _list_recipes("students")


def main(argv: list[str] | None = None) -> None:
    """Entry point: OptikitError → `optikit: error: …` on stderr and exit 2 (OPTIKIT_DEBUG=1 shows the traceback)."""
    _quiet_libraries()
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
