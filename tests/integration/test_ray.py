"""`--executor ray` gathers the same records as the local executor: same variants, predictions and accuracies."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.conftest import matrix_file

ray = pytest.importorskip("ray")


@pytest.fixture
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_and_local_executors_give_the_same_results(local_ray, digits_teacher, tmp_path: Path) -> None:
    from optikit.matrix import ExecutorConfig, bench_matrix, load_matrix

    m = load_matrix(matrix_file(tmp_path / "small.toml", digits_teacher.path,
                                'onnx = ["export-onnx"]\n        sparse = ["prune-unstructured:amount=0.3"]'))
    local = bench_matrix(m, tmp_path / "local")
    remote = bench_matrix(m, tmp_path / "ray", executor=ExecutorConfig("ray"))
    assert remote.run.ran and not remote.failed_cells and not local.failed_cells
    [a] = local.groups.values()
    [b] = remote.groups.values()
    assert [v.name for v in a.variants] == [v.name for v in b.variants] == ["baseline", "onnx", "sparse"]
    for x, y in zip(a.variants, b.variants, strict=True):
        assert x.id == y.id  # the same content-addressed variants
        assert x.alignment.accuracy == y.alignment.accuracy
        assert x.alignment.f1_macro == y.alignment.f1_macro
        assert x.fidelity.agreement == y.fidelity.agreement
        assert x.alignment.per_class == y.alignment.per_class  # every class's precision, recall, support
        assert x.capability.log_loss == pytest.approx(y.capability.log_loss, rel=1e-6)
        assert x.fidelity.flips_right_to_wrong == y.fidelity.flips_right_to_wrong
    # records written by the driver: --resume reads them like local ones
    record = json.loads(next((tmp_path / "ray" / "cells").rglob("onnx.json")).read_text())
    assert record["status"] == "ok"
    again = bench_matrix(m, tmp_path / "ray", resume=True, executor=ExecutorConfig("ray"))
    assert not again.run.ran and len(again.run.reused) == 3


def test_address_without_ray_executor_is_a_config_error() -> None:
    from optikit.errors import ConfigError
    from optikit.matrix import ExecutorConfig

    with pytest.raises(ConfigError, match="--address needs --executor ray"):
        ExecutorConfig("local", "auto")
