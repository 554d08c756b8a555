"""A user's Hugging Face image classifier (a tiny ResNet made here) and an image folder, end to end: every pass
that applies, then one bench of all the variants with the generic image behavioural suite."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.image_helpers import (
    folder_dataset,
    image_context,
    image_variant,
    save_tiny_resnet,
    train_briefly,
    write_shapes_folder,
)


def _quick_config() -> Any:
    from optikit.harness.bench import BenchConfig
    from optikit.harness.latency import LatencyConfig
    from optikit.harness.timing import SpeedupConfig

    return BenchConfig(latency=LatencyConfig(batch_sizes=(1,), min_iterations=3, min_seconds=0.0, warmup_max=5),
                       speedup=SpeedupConfig(rounds=4, calls_per_round=1, warmup=1))


def test_python_api_runs_every_image_pass_and_benches_them(tmp_path: Path) -> None:
    """Through the functions this repository's image support is made of (no import step): a ResNet baseline,
    its ONNX export, static int8, channel pruning and a distilled student, measured in one bench."""
    from optikit.harness.bench import bench
    from optikit.passes.base import make_pass

    data = folder_dataset(write_shapes_folder(tmp_path / "shapes"))
    teacher = image_variant(save_tiny_resnet(tmp_path / "saved"), tmp_path / "teacher", data)
    train_briefly(teacher, data, epochs=6)
    ctx = image_context(tmp_path / "variants", data)
    onnx = make_pass("export-onnx").run(teacher, ctx)
    int8 = make_pass("quantize:mode=static").run(onnx, ctx)
    pruned = make_pass("prune-structured:amount=0.5").run(teacher, ctx)
    student = make_pass("distill:epochs=3").run(teacher, ctx)
    results = bench([teacher, onnx, int8, pruned, student], _quick_config(), data=data)
    rows = {r.name: r for r in results.variants}
    assert all(r.status != "failed" for r in rows.values()), {n: r.error for n, r in rows.items()}
    assert rows[onnx.name].fidelity.agreement == 1.0
    assert rows[int8.name].fidelity.agreement >= 0.8
    suite = rows[teacher.name].behavioral
    assert suite is not None and suite.suite == "images" and suite.counts["inv"].cases == 30
    assert rows[pruned.name].size.parameters < rows[teacher.name].size.parameters


def _cli(args: list[str]) -> str:
    from click.testing import CliRunner

    from optikit.cli import cli

    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_cli_imports_compresses_and_benches_a_resnet_on_an_image_folder(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTIKIT_HOME", str(tmp_path / "home"))
    folder = write_shapes_folder(tmp_path / "shapes")
    model = save_tiny_resnet(tmp_path / "resnet")
    imported = Path(_cli(["import", str(model), "--data", str(folder)]).strip().splitlines()[-1])
    assert (imported / "preprocessor_config.json").is_file()
    manifest = json.loads((imported / "variant.json").read_text())
    assert manifest["task"]["kind"] == "image" and manifest["task"]["label_names"] == ["circle", "square", "triangle"]

    def compress(*specs: str) -> list[Path]:
        args = ["compress", str(model), "--data", str(folder), "--out", str(tmp_path / "variants")]
        for spec in specs:
            args += ["--pass", spec]
        return [Path(line.strip()) for line in _cli(args).splitlines() if line.startswith("  ")]

    onnx = compress("export-onnx")[-1]
    static = compress("quantize:mode=static")[-1]  # export-onnx is inserted, and reused
    pruned = compress("prune-structured")[-1]
    assert json.loads((onnx / "variant.json").read_text())["format"] == "onnx"
    assert json.loads((pruned / "variant.json").read_text())["architecture"]["name"] == "hf-pruned"
    out = tmp_path / "report"
    _cli(["bench", str(imported), str(onnx), str(static), str(pruned), "--data", str(folder), "--out", str(out),
          "--batch-size", "1", "--min-seconds", "0.05", "--speedup-rounds", "4"])
    results = json.loads((out / "results.json").read_text())
    assert [v["status"] for v in results["variants"]] == ["ok"] * 4, [v.get("error") for v in results["variants"]]
    assert results["variants"][0]["behavioral"]["suite"] == "images"
    agreement = [v["fidelity"]["agreement"] for v in results["variants"]]
    assert agreement[1] == 1.0 and np.min(agreement) >= 0.8
    assert os.path.isfile(out / "report.html")
