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


class MlflowServer:
    """`mlflow server` on 127.0.0.1 over a SQLite store in `root`: stopped and started again on the same port and
    store, as a restart would."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with (self.root / "server.log").open("a") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
                                          "--port", str(self.port), "--backend-store-uri",
                                          f"sqlite:///{self.root / 'mlflow.db'}", "--artifacts-destination",
                                          str(self.root / "artifacts"), "--workers", "1"],
                                         stdout=log, stderr=subprocess.STDOUT, cwd=self.root)

    def wait_until_up(self) -> None:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if self.proc is None or self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start: {(self.root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


@pytest.fixture
def server(tmp_path: Path):
    s = MlflowServer(tmp_path)
    try:
        s.start()
        s.wait_until_up()
        yield s
    finally:
        s.stop()


@pytest.fixture
def mlflow_server(server: MlflowServer) -> str:
    return server.uri


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


def test_a_server_restart_mid_run_costs_only_the_variant_it_missed_and_says_so(server: MlflowServer, tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch,
                                                                              capsys) -> None:
    from mlflow.tracking import MlflowClient

    import optikit.tracking.mlflow as tracking
    from optikit.tracking._resilient import NOT_LOGGED_FILE
    from tests.unit.report.fake import baseline_row, fake_row, results_of

    rows = [baseline_row()] + [fake_row(n, f1=0.89, acc=0.89, p50=0.5, size=1_000_000, lineage=["export-onnx"])
                               for n in ("missed", "after")]
    real = tracking._client
    restarts: list[str] = []

    class ServerRestartsMidRun:
        """The real client; the server stops just before variant "missed" is logged and is running again (the same
        port and store) when variant "after" is."""

        def __init__(self, uri: str) -> None:
            self.client = real(uri)

        def __getattr__(self, name: str):
            method = getattr(self.client, name)

            def call(*args, **kwargs):
                run_name = kwargs.get("run_name") if name == "create_run" else None
                if run_name == "missed" and not restarts:
                    server.stop()
                    restarts.append("stopped")
                elif run_name == "after" and restarts == ["stopped"]:
                    server.start()
                    server.wait_until_up()
                    restarts.append("started")
                return method(*args, **kwargs)
            return call

    monkeypatch.setattr(tracking, "_client", ServerRestartsMidRun)
    out = tmp_path / "out"
    pid = tracking.track({"run": results_of(rows)}, {}, out, run_name="bench",
                         config=tracking.TrackingConfig(server.uri, "restart", retry_seconds=2))
    assert restarts == ["stopped", "started"]

    client = MlflowClient(tracking_uri=server.uri)
    parent = client.get_run(pid)
    children = {r.info.run_name: r for r in client.search_runs([parent.info.experiment_id])
                if r.data.tags.get("mlflow.parentRunId") == pid}
    assert sorted(children) == ["after", "baseline"]  # the server's restart cost "missed" alone
    assert children["after"].info.status == "FINISHED"
    assert children["after"].data.metrics["f1_macro"] == pytest.approx(0.89)  # logged again once the server was back
    assert parent.info.status == "FINISHED"  # the measurements did not fail
    why = f"variant missed: not logged to {server.uri}: MLflow create_run: MlflowException: API request to"
    assert parent.data.tags["optikit.tracking_incomplete"].startswith(why)
    assert why in (out / NOT_LOGGED_FILE).read_text()
    assert f"optikit: warning: MLflow: {why}" in capsys.readouterr().err
