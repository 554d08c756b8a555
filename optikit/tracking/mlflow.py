"""MLflow tracking: one parent run per bench (or matrix), one nested run per variant — params, metrics, artifacts."""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from optikit.config import require
from optikit.errors import ConfigError, MissingDependencyError
from optikit.harness import compare
from optikit.harness.results import Results, VariantResult

# MLflow's own limits (3.x): keys up to 250 characters, param values up to 6000, 1000 metrics / 100 params a batch.
_KEY = re.compile(r"[^A-Za-z0-9_\-. /]+")
MAX_KEY, MAX_PARAM_VALUE, METRIC_BATCH, PARAM_BATCH = 250, 6000, 1000, 100
# Bulky or duplicated parts of a row: the flip lists are examples, not figures; per-class tables stay (they are).
_SKIP = {"flipped", "examples", "cases", "regressions", "rounds"}


@dataclass(frozen=True)
class TrackingConfig:
    """Where runs go: `tracking_uri` (default a SQLite store in the output folder) and the experiment name."""

    tracking_uri: str | None = None
    experiment: str = "optikit"

    def __post_init__(self) -> None:
        require(bool(self.experiment.strip()), "the MLflow experiment name must not be empty")


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


def flatten(value: Any, prefix: str = "") -> dict[str, float]:
    """Every numeric figure under `value` as `a.b.c` keys; lists of per-batch rows are keyed by their batch size."""
    out: dict[str, float] = {}
    if isinstance(value, bool) or value is None:
        return out
    if isinstance(value, int | float):
        if value == value and abs(value) != float("inf"):  # MLflow rejects NaN/inf in some stores
            out[_key(prefix)] = float(value)
        return out
    if isinstance(value, Mapping):
        for k, v in value.items():
            if str(k) not in _SKIP:
                out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            tag = f"b{item['batch_size']}" if isinstance(item, Mapping) and "batch_size" in item else str(i)
            out.update(flatten({k: v for k, v in item.items() if k != "batch_size"} if isinstance(item, Mapping)
                               else item, f"{prefix}.{tag}"))
    return out


def variant_metrics(row: VariantResult, results: Results | None = None) -> dict[str, float]:
    """Every figure of `row`, plus (given its `results`) the comparison against the baseline as `vs_baseline.*`:
    the speedup per batch size, the size ratio and the metric deltas that the report and the gate state."""
    d = asdict(row)
    figures = {k: d[k] for k in ("latency", "tokenization_ms", "size", "alignment", "capability", "fidelity",
                                 "significance", "quadrant", "behavioral", "speedup", "diagnostics")}
    figures["peak_rss_mb"] = row.peak_rss_mb
    if results is not None:
        figures["vs_baseline"] = compare.headline_figures(results, row)
    return flatten(figures)


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
    """
    uri = config.tracking_uri or default_uri(out)
    client = _client(uri)
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
        raise ConfigError(f"cannot start an MLflow run at {uri}: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:200] if str(exc) else ''}") from None
    pid = parent.info.run_id
    status = "FINISHED"
    try:
        for group, results in groups.items():
            where = (variant_paths or {}).get(group, {})
            for row in results.variants:
                run = client.create_run(experiment, run_name=f"{group}/{row.name}" if len(groups) > 1 else row.name,
                                        tags={"mlflow.parentRunId": pid, "optikit.group": group,
                                              "optikit.status": row.status, **(tags or {})})
                manifest = _manifest(where.get(row.name))
                _log(client, run.info.run_id, variant_params(row, manifest, {"group": group}),
                     variant_metrics(row, results) if row.status == "ok" else {})
                if row.error:
                    client.set_tag(run.info.run_id, "optikit.error", row.error[:5000])
                if manifest is not None:
                    client.log_dict(run.info.run_id, manifest, "variant.json")
                client.set_terminated(run.info.run_id, "FINISHED" if row.status == "ok" else "FAILED")
        first = next(iter(groups.values()))
        settings = {f"settings.{k}": json.dumps(v, default=str) for k, v in first.settings.items()
                    if k not in ("matrix", "gate")}
        _log(client, pid, {_key(k): v[:MAX_PARAM_VALUE] for k, v in settings.items()}, {})
        for p in paths.values():
            if Path(p).is_file():
                client.log_artifact(pid, str(p), artifact_path="report")
    except Exception:
        status = "FAILED"
        raise
    finally:
        client.set_terminated(pid, status)
    return pid
