"""MLflow tracking: one parent run per bench (or matrix), one nested run per variant — params, headline metrics,
tables and the variant folder."""
from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from optikit.config import require
from optikit.errors import ConfigError, MissingDependencyError
from optikit.harness.results import Results, VariantResult
from optikit.tracking._resilient import (
    NotLogged,
    RetryingClient,
    TrackingUnavailable,
    close_parent,
    first_line,
    is_logging_failure,
    leave_out,
)

# MLflow's own limits (3.x): keys up to 250 characters, param values up to 6000, 1000 metrics / 100 params a batch.
_KEY = re.compile(r"[^A-Za-z0-9_\-. /]+")
MAX_KEY, MAX_PARAM_VALUE, METRIC_BATCH, PARAM_BATCH = 250, 6000, 1000, 100


@dataclass(frozen=True)
class TrackingConfig:
    """Where runs go: `tracking_uri` (default a SQLite store in the output folder) and the experiment name;
    `max_artifact_mb`: a variant folder's files larger than this are listed, not logged (a MiniLM's weights)."""

    tracking_uri: str | None = None
    experiment: str = "optikit"
    max_artifact_mb: float = 50.0
    retry_seconds: float = 30.0  # how long one MLflow call is retried while its server is unreachable

    def __post_init__(self) -> None:
        require(bool(self.experiment.strip()), "the MLflow experiment name must not be empty")
        require(self.max_artifact_mb >= 0, f"max_artifact_mb must be ≥ 0, got {self.max_artifact_mb}")
        require(self.retry_seconds >= 0, f"retry_seconds must be ≥ 0, got {self.retry_seconds}")


def _client(uri: str) -> Any:
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as exc:
        raise MissingDependencyError("mlflow", "tracking") from exc
    return MlflowClient(tracking_uri=uri)


def default_uri(out: Path) -> str:
    # MLflow 3 refuses the ./mlruns file store unless opted in; a SQLite file beside the report is the local default.
    return f"sqlite:///{(out / 'mlflow.db').resolve()}"


def _key(text: str) -> str:
    return _KEY.sub("_", text)[:MAX_KEY]


# The figures logged as a variant run's metrics (the per-batch ones as `NAME.bN`), those of them logged with their
# 95% interval (`NAME_low`, `NAME_high`), and where every other figure goes: the run's tables. ~25 metrics a run at
# two batch sizes, 37 at four, where flattening every field of a row gave hundreds.
METRICS = ("latency_ms", "throughput_per_s", "speedup", "size_bytes", "parameters", "nonzero_parameters",
           "size_ratio", "accuracy", "f1_macro", "f1_weighted", "log_loss", "ece", "agreement",
           "accuracy_delta_points", "f1_macro_delta_points", "mcnemar_p", "suite_pass_rate", "peak_rss_mb")
WITH_INTERVAL = ("speedup", "f1_macro_delta_points")


def metric_key(figure: str, batch_size: int | None = None) -> str:
    """`latency_ms.b32` for a figure at batch 32, `f1_macro` for one without a batch size."""
    return figure if batch_size is None else f"{figure}.b{batch_size}"


def variant_metrics(row: VariantResult, results: Results) -> dict[str, float]:
    """The headline figures of `row` (its comparison against the baseline from `optikit.harness.compare`, through
    `Results.figures`), keyed by `metric_key`."""
    out: dict[str, float] = {}
    for f in results.figures(row):
        if f.figure not in METRICS or f.value != f.value or abs(f.value) == float("inf"):
            continue  # MLflow rejects NaN/inf in some stores
        out[metric_key(f.figure, f.batch_size)] = f.value
        if f.figure in WITH_INTERVAL and f.low is not None and f.high is not None:
            out[metric_key(f"{f.figure}_low", f.batch_size)] = f.low
            out[metric_key(f"{f.figure}_high", f.batch_size)] = f.high
    return out


def variant_tables(row: VariantResult, results: Results) -> dict[str, list[dict[str, Any]]]:
    """The tables of a variant run: every figure with its unit and interval (its rows of the long frame), each
    latency block's median per batch size, and the reliability bins behind the ECE."""
    blocks = [{"batch_size": lat.batch_size, "block": i, "p50_ms": ms}
              for lat in row.latency for i, ms in enumerate(lat.block_p50_ms)]
    return {"tables/figures.json": [asdict(f) for f in results.figures(row)],
            "tables/latency_blocks.json": blocks,
            "tables/reliability.json": [asdict(b) for b in row.capability.reliability] if row.capability else []}


def log_variant_folder(client: Any, run_id: str, folder: Path, max_bytes: int) -> list[str]:
    """Logs every file of the variant folder under `variant/`, except files over `max_bytes` (the weights of a
    large model): those are listed in `variant/SKIPPED.txt` and the `optikit.artifact_skipped` tag instead, so the
    manifest, the tokenizer and the configs are logged whatever the model's size. Returns the files skipped."""
    skipped: list[str] = []
    for root, dirs, files in os.walk(folder):  # symlinked folders are not followed
        dirs.sort()
        for name in sorted(files):
            path = Path(root) / name
            if path.is_symlink() or not path.is_file():
                continue
            rel = path.relative_to(folder)
            size = path.stat().st_size
            if size > max_bytes:
                skipped.append(f"{rel.as_posix()} ({size / 1e6:.1f} MB)")
                continue
            client.log_artifact(run_id, str(path), artifact_path="/".join(("variant", *rel.parent.parts)))
    if skipped:
        client.log_text(run_id, f"files over {max_bytes / 1e6:g} MB, not logged (they stay in {folder}):\n"
                        + "\n".join(skipped) + "\n", "variant/SKIPPED.txt")
        client.set_tag(run_id, "optikit.artifact_skipped", ", ".join(skipped)[:5000])
    return skipped


def variant_params(row: VariantResult, manifest: Mapping[str, Any] | None, extra: Mapping[str, Any]) -> dict[str, str]:
    """Lineage and configs: each pass step's name and every option, plus where the variant came from."""
    params: dict[str, Any] = {"variant": row.name, "variant_id": row.id, "format": row.format,
                              "parent": row.parent or "", "lineage": " → ".join(row.lineage) or "baseline",
                              "is_baseline": row.is_baseline, **extra}
    for i, step in enumerate((manifest or {}).get("lineage", []), 1):
        params[f"pass.{i}.name"] = step["pass"]
        params[f"pass.{i}.auto"] = step.get("auto", False)
        for k, v in (step.get("config") or {}).items():
            params[f"pass.{i}.{k}"] = json.dumps(v) if isinstance(v, list | dict) else v
    if manifest and manifest.get("architecture"):
        params["architecture"] = json.dumps(manifest["architecture"], sort_keys=True)
    return {_key(k): str(v)[:MAX_PARAM_VALUE] for k, v in params.items()}


def _log(client: Any, run_id: str, params: Mapping[str, str], metrics: Mapping[str, float]) -> None:
    import time

    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    items = list(params.items())
    for i in range(0, len(items), PARAM_BATCH):
        client.log_batch(run_id, params=[Param(k, v) for k, v in items[i:i + PARAM_BATCH]])
    values = list(metrics.items())
    for i in range(0, len(values), METRIC_BATCH):
        client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in values[i:i + METRIC_BATCH]])


def _log_table(client: Any, run_id: str, rows: list[dict[str, Any]], name: str) -> None:
    if not rows:
        return
    import pandas as pd

    client.log_table(run_id, pd.DataFrame(rows), name)


def _manifest(path: str | None) -> dict[str, Any] | None:
    manifest = Path(path) / "variant.json" if path else None
    return json.loads(manifest.read_text(encoding="utf-8")) if manifest and manifest.is_file() else None


def _experiment(client: Any, name: str, out: Path, local: bool) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    # A local store keeps its artifacts beside it; a server decides its own artifact root.
    location = (out / "mlartifacts").resolve().as_uri() if local else None
    return client.create_experiment(name, artifact_location=location)


def _active_run_id(uri: str) -> str | None:
    """The active MLflow run's id when it lives in the store `uri` names (MLflow imported by the caller only)."""
    import sys

    if "mlflow" not in sys.modules:
        return None
    import mlflow

    run = mlflow.active_run()
    return run.info.run_id if run is not None and mlflow.get_tracking_uri() == uri else None


def track(groups: Mapping[str, Results], paths: Mapping[str, Path], out: Path, *, config: TrackingConfig,
          run_name: str, variant_paths: Mapping[str, Mapping[str, str | None]] | None = None,
          tags: Mapping[str, str] | None = None, parent_run_id: str | None = None) -> str:
    """Logs one parent run (settings, the report files) and a nested run per variant of every group.

    `variant_paths[group][variant name]` is the variant folder whose manifest is logged and read for the lineage.
    The parent run is itself nested under `parent_run_id` (in that run's experiment), or under the active MLflow run
    when one is active on the same tracking URI, so a bench inside a tracked script never leaves an orphan
    top-level run. Returns the parent run id.

    A server that cannot be reached at the start (after `config.retry_seconds`) is a ConfigError; one that goes away
    later costs only what it could not take: each call is retried, then the variant is left out and why is warned
    and written to `out/tracking-errors.txt` (NOT_LOGGED_FILE), and the variants after it are logged again.
    """
    uri = config.tracking_uri or default_uri(out)
    client = RetryingClient(_client(uri), config.retry_seconds)
    not_logged = NotLogged(uri)
    parent_run_id = parent_run_id or _active_run_id(uri)
    try:
        experiment = (client.get_run(parent_run_id).info.experiment_id if parent_run_id
                      else _experiment(client, config.experiment, out, config.tracking_uri is None))
        nested = {"mlflow.parentRunId": parent_run_id} if parent_run_id else {}
        parent = client.create_run(experiment, run_name=run_name,
                                   tags={"optikit.kind": "bench", **nested, **(tags or {})})
    except MissingDependencyError:
        raise
    except Exception as exc:  # MLflow raises its own types (and requests' for an unreachable server)
        cause = str(exc) if isinstance(exc, TrackingUnavailable) else first_line(exc)
        raise ConfigError(f"cannot start an MLflow run at {uri} ({cause}): check --tracking-uri and that the "
                          f"server is running; the results are written in {out} either way") from None
    pid = parent.info.run_id
    status = "FINISHED"
    try:
        for group, results in groups.items():
            where = (variant_paths or {}).get(group, {})
            for row in results.variants:
                run = None
                try:
                    run = client.create_run(experiment,
                                            run_name=f"{group}/{row.name}" if len(groups) > 1 else row.name,
                                            tags={"mlflow.parentRunId": pid, "optikit.group": group,
                                                  "optikit.status": row.status, **(tags or {})})
                    folder = where.get(row.name)
                    manifest = _manifest(folder)
                    _log(client, run.info.run_id, variant_params(row, manifest, {"group": group}),
                         variant_metrics(row, results) if row.status == "ok" else {})
                    if row.error:
                        client.set_tag(run.info.run_id, "optikit.error", row.error[:5000])
                    if row.status == "ok":
                        for name, table in variant_tables(row, results).items():
                            _log_table(client, run.info.run_id, table, name)
                    if folder and Path(folder).is_dir():
                        log_variant_folder(client, run.info.run_id, Path(folder), int(config.max_artifact_mb * 1e6))
                    client.set_terminated(run.info.run_id, "FINISHED" if row.status == "ok" else "FAILED")
                except Exception as exc:
                    if not is_logging_failure(exc):
                        raise
                    leave_out(client, not_logged, f"variant {group}/{row.name}" if len(groups) > 1
                               else f"variant {row.name}", run, exc)
        first = next(iter(groups.values()))
        settings = {f"settings.{k}": json.dumps(v, default=str) for k, v in first.settings.items()
                    if k not in ("matrix", "gate")}
        try:
            _log(client, pid, {_key(k): v[:MAX_PARAM_VALUE] for k, v in settings.items()}, {})
            for key, p in paths.items():
                if Path(p).is_file():  # a matrix of several groups keys each group's files `GROUP:kind`
                    group = key.partition(":")[0] if ":" in key else ""
                    client.log_artifact(pid, str(p), artifact_path="report/" + _key(group.replace("@", "-at-"))
                                        if group else "report")
        except Exception as exc:
            if not is_logging_failure(exc):
                raise
            not_logged.add("the settings and report files of the parent run", exc)
    except Exception:
        status = "FAILED"
        raise
    finally:
        close_parent(client, not_logged, pid, status, out)
    return pid
