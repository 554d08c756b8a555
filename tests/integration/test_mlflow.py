"""`optikit bench --track mlflow` against a real MLflow server: nested runs, params, headline metrics, tables and
the variant folder as an artifact."""
from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.integration.conftest import run_cli

mlflow = pytest.importorskip("mlflow")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path: Path):
    port = _free_port()
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                             "--artifacts-destination", str(tmp_path / "artifacts"), "--workers", "1"],
                            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start: {(tmp_path / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield uri
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_bench_track_mlflow_logs_nested_runs_to_a_server(mlflow_server: str, digits_teacher, ctx,
                                                         tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from optikit.api import compress

    onnx = compress(digits_teacher, ["export-onnx"], out=ctx.workdir, threads=1)
    code = run_cli("bench", str(digits_teacher.path), str(onnx.path), "--out", str(tmp_path / "r"), "--threads", "1",
                   "--batch-size", "1", "--min-seconds", "0.05", "--min-iterations", "3", "--speedup-rounds", "4",
                   "--resamples", "100", "--suite", "none", "--track", "mlflow", "--tracking-uri", mlflow_server,
                   "--experiment", "optikit-test")
    assert code == 0
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("optikit-test")
    runs = client.search_runs([experiment.experiment_id])
    [parent] = [r for r in runs if r.data.tags.get("optikit.kind") == "bench" and "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.params["format"] for r in children) == ["onnx", "torch"]
    child = next(r for r in children if r.data.params["format"] == "onnx")
    assert child.data.params["pass.1.name"] == "export-onnx" and child.data.params["pass.1.opset"] == "20"
    assert child.data.params["lineage"].startswith("export-onnx")
    metrics = child.data.metrics
    assert 0.8 < metrics["accuracy"] <= 1.0
    assert {"latency_ms.b1", "throughput_per_s.b1", "speedup.b1", "speedup_low.b1", "speedup_high.b1", "size_bytes",
            "size_ratio", "f1_macro", "f1_macro_delta_points", "mcnemar_p"} <= set(metrics)
    assert metrics["speedup_low.b1"] <= metrics["speedup.b1"] <= metrics["speedup_high.b1"]
    assert len(metrics) <= 40  # the headline figures, not every field flattened
    assert child.info.status == "FINISHED" and parent.info.status == "FINISHED"
    tables = {a.path for a in client.list_artifacts(child.info.run_id, "tables")}
    assert tables == {"tables/figures.json", "tables/latency_blocks.json", "tables/reliability.json"}
    variant = {a.path for a in client.list_artifacts(child.info.run_id, "variant")}
    assert {"variant/variant.json", "variant/model.onnx"} <= variant
    report = [a.path for a in client.list_artifacts(parent.info.run_id, "report")]
    assert "report/report.html" in report and "report/results.json" in report
