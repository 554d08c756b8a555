"""MLflow tracking into a local SQLite store: headline metrics by name, tables, the variant folder as an artifact."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from optikit.harness.records import MeasuredSpeedup, ReliabilityBin
from optikit.tracking.mlflow import TrackingConfig, default_uri, track, variant_metrics
from tests.unit.report.fake import fake_results

pytest.importorskip("mlflow")

HEADLINE = {"latency_ms.b1", "latency_ms.b32", "throughput_per_s.b32", "speedup.b1", "speedup.b32",
            "speedup_low.b32", "speedup_high.b32", "size_bytes", "size_ratio", "accuracy", "f1_macro",
            "f1_macro_delta_points", "f1_macro_delta_points_low", "f1_macro_delta_points_high", "peak_rss_mb"}


def _variant_folder(root: Path, *, weights: int) -> Path:
    root.mkdir(parents=True)
    (root / "variant.json").write_text(json.dumps({"id": "id-int8", "lineage": [
        {"pass": "export-onnx", "config": {"opset": 20}}, {"pass": "quantize", "config": {"mode": "dynamic"}}]}))
    (root / "model.onnx").write_bytes(b"\0" * weights)
    (root / "tokenizer").mkdir()
    (root / "tokenizer" / "vocab.txt").write_text("[PAD]\n")
    return root


def _tracked(tmp_path: Path, max_artifact_mb: float = 50.0):
    from mlflow.tracking import MlflowClient

    res = fake_results()
    int8 = res.variants[1]
    assert int8.capability is not None
    res.variants[1] = replace(
        int8, speedup=tuple(MeasuredSpeedup(b, 2.0, 1.8, 2.2, 10, "faster") for b in (1, 32)),
        latency=(replace(int8.latency[0], block_p50_ms=(0.5, 0.52, 0.6)), *int8.latency[1:]),
        capability=replace(int8.capability, reliability=(ReliabilityBin(0.0, 0.5, 3, 0.3, 0.4),)))
    folder = _variant_folder(tmp_path / "int8", weights=2_000_000)
    # The default store: SQLite and the artifacts beside the report, nothing in the working directory.
    pid = track({"run": res}, {}, tmp_path, config=TrackingConfig(max_artifact_mb=max_artifact_mb),
                run_name="bench", variant_paths={"run": {"int8": str(folder)}})
    client = MlflowClient(default_uri(tmp_path))
    [child] = [r for r in client.search_runs([client.get_run(pid).info.experiment_id])
               if r.data.tags.get("mlflow.parentRunId") == pid and r.info.run_name == "int8"]
    return res, client, child


def test_variant_runs_log_the_headline_figures_by_name_and_no_more_than_forty(tmp_path: Path) -> None:
    res, client, child = _tracked(tmp_path)
    metrics = child.data.metrics
    assert HEADLINE <= set(metrics), HEADLINE - set(metrics)
    assert len(metrics) <= 40
    assert not any(k.startswith(("alignment.", "latency.", "significance.")) for k in metrics)  # no flattened rows
    assert metrics["speedup.b32"] == 2.0 and (metrics["speedup_low.b32"], metrics["speedup_high.b32"]) == (1.8, 2.2)
    assert metrics["size_ratio"] == 4.0 and metrics["f1_macro"] == 0.895
    assert metrics["f1_macro_delta_points"] == pytest.approx(-0.5)
    assert variant_metrics(res.variants[1], res) == pytest.approx(metrics)


def test_variant_runs_log_figures_latency_blocks_and_reliability_as_tables(tmp_path: Path) -> None:
    _, client, child = _tracked(tmp_path)
    run_id = child.info.run_id
    tables = {a.path for a in client.list_artifacts(run_id, "tables")}
    assert tables == {"tables/figures.json", "tables/latency_blocks.json", "tables/reliability.json"}
    blocks = json.loads(Path(client.download_artifacts(run_id, "tables/latency_blocks.json", str(tmp_path))).read_text())
    assert blocks["columns"] == ["batch_size", "block", "p50_ms"] and [r[2] for r in blocks["data"]] == [0.5, 0.52, 0.6]
    bins = json.loads(Path(client.download_artifacts(run_id, "tables/reliability.json", str(tmp_path))).read_text())
    assert bins["data"] == [[0.0, 0.5, 3, 0.3, 0.4]]
    figures = json.loads(Path(client.download_artifacts(run_id, "tables/figures.json", str(tmp_path))).read_text())
    assert {"figure", "value", "unit", "batch_size", "low", "high"} <= set(figures["columns"])


def test_the_variant_folder_is_an_artifact_without_files_over_the_limit(tmp_path: Path) -> None:
    _, client, child = _tracked(tmp_path)
    run_id = child.info.run_id
    logged = {a.path for a in client.list_artifacts(run_id, "variant")}
    assert {"variant/variant.json", "variant/model.onnx", "variant/tokenizer"} <= logged
    assert "optikit.artifact_skipped" not in child.data.tags
    _, client, child = _tracked(tmp_path / "small", max_artifact_mb=1)  # the 2 MB weights are over 1 MB
    run_id = child.info.run_id
    logged = {a.path for a in client.list_artifacts(run_id, "variant")}
    assert "variant/variant.json" in logged and "variant/model.onnx" not in logged
    assert {a.path for a in client.list_artifacts(run_id, "variant/tokenizer")} == {"variant/tokenizer/vocab.txt"}
    assert child.data.tags["optikit.artifact_skipped"] == "model.onnx (2.0 MB)"
    note = Path(client.download_artifacts(run_id, "variant/SKIPPED.txt", str(tmp_path))).read_text()
    assert "model.onnx (2.0 MB)" in note
