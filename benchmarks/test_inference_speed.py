"""Inference speed of every variant of the CI matrix, with pytest-benchmark (not part of the `tests/` run).

    optikit bench benchmarks/ci.toml --out reports/ci          # builds the variants (cached by content)
    pytest benchmarks/test_inference_speed.py --benchmark-json reports/ci/speed.json

Each variant is loaded once from the pass cache (running its chain if missing) and timed on one real batch.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from optikit.matrix import load_matrix

MATRIX = load_matrix(Path(os.environ.get("OPTIKIT_SPEED_MATRIX", Path(__file__).with_name("ci.toml"))))
CASES = [(v.name, b) for v in MATRIX.variants for b in MATRIX.batch_sizes]


@pytest.fixture(scope="module")
def teacher():
    from optikit.api import resolve_model

    t = MATRIX.teachers[0]
    return resolve_model(t.recipe, t.data_path())


@pytest.mark.parametrize("name, batch_size", CASES, ids=[f"{n}-b{b}" for n, b in CASES])
def test_inference_speed(benchmark, teacher, name: str, batch_size: int) -> None:
    from optikit.api import compress_chain
    from optikit.models import Encoder
    from optikit.runners import load_runner
    from optikit.teach import dataset_for

    spec = next(v for v in MATRIX.variants if v.name == name)
    try:
        variant = compress_chain(teacher, [s.spec() for s in spec.chain])[-1] if spec.chain else teacher
    except Exception as exc:  # noqa: BLE001 - a pass that is missing or broken is the matrix's business
        pytest.skip(f"{name} could not be built: {exc}")
    runner = load_runner(variant, MATRIX.threads or 1, "cpu")
    data = dataset_for(teacher).take(list(teacher.splits.test)[:batch_size])
    batch = Encoder(variant).encode(data.inputs, None)
    benchmark.extra_info.update({"variant": name, "format": variant.format, "batch_size": batch_size,
                                 "lineage": variant.describe()})
    benchmark(runner.logits, batch)
