"""The search space turns Optuna choices into pass chains; Results.best picks within a loss budget."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from optikit.harness.records import Environment, Task
from optikit.harness.results import Results, VariantResult
from optikit.search.space import SearchSpace, students_for

optuna = pytest.importorskip("optuna")


def test_space_builds_a_chain_from_each_choice() -> None:
    from optikit.cpu import CpuFeatures

    avx2 = CpuFeatures("an AVX2 CPU", "x86_64", frozenset({"avx2"}))
    space = SearchSpace(students=("cnn-small",), max_loss=0.01, cpu=avx2)
    trial = optuna.trial.FixedTrial({"shrink": "prune", "prune_amount": 0.3, "recover_epochs": 2, "runtime": "onnx",
                                     "quantize": "static", "per_channel": False, "calibration": "entropy",
                                     "static_format": "qdq", "activation_type_qdq": "uint8"})
    assert space.suggest(trial) == ["prune-structured:amount=0.30,recover=finetune,recover_epochs=2", "export-onnx",
                                    "quantize:mode=static,calibration=entropy,format=qdq,activation_type=uint8,"
                                    "per_channel=false,max_loss=0.01"]
    student = optuna.trial.FixedTrial({"shrink": "distill", "student": "cnn-small", "runtime": "torch",
                                       "torch_quantize": "none"})
    assert space.suggest(student) == ["distill:student=cnn-small"]
    plain = optuna.trial.FixedTrial({"shrink": "none", "runtime": "torch", "torch_quantize": "none"})
    assert space.suggest(plain) == []


def test_every_chain_the_space_builds_is_a_valid_plan() -> None:
    from optikit.passes.base import make_pass, plan_chain

    space = SearchSpace(students=students_for("torch"), max_loss=0.01)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        trial = study.ask()
        plan_chain("torch", [make_pass(s) for s in space.suggest(trial)])
        study.tell(trial, [1.0, 0.0])
    assert students_for("torch") == ("cnn-small",)


def test_an_onnx_only_baseline_is_offered_quantization_alone() -> None:
    from optikit.passes.base import make_pass, plan_chain

    space = SearchSpace(students=(), max_loss=0.01, teacher_format="onnx")
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    chains = []
    for _ in range(20):
        trial = study.ask()
        chain = space.suggest(trial)
        plan_chain("onnx", [make_pass(s) for s in chain])  # every chain is one an ONNX model can take
        chains.append(chain)
        study.tell(trial, [1.0, 0.0])
    assert all(step.startswith(("quantize:", "export-openvino:")) for chain in chains for step in chain)
    assert any(chains) and any(not c for c in chains)


def _row(name: str, f1: float, p50: float, size: int, baseline: bool = False) -> VariantResult:
    # The fewest figures a row can carry (as an old results.json might): read through the JSON edge.
    return VariantResult.from_dict({"id": name, "name": name, "format": "onnx", "lineage": [], "parent": None,
                                    "is_baseline": baseline, "alignment": {"f1_macro": f1, "accuracy": f1},
                                    "size": {"bytes_on_disk": size}, "latency": [{"batch_size": 32, "p50_ms": p50}]})


def test_results_best_is_the_fastest_within_the_budget_and_may_be_the_baseline() -> None:
    results = Results([_row("base", 0.95, 10.0, 100, True), _row("fast-bad", 0.90, 2.0, 50),
                       _row("fast-ok", 0.945, 5.0, 80), _row("small", 0.944, 9.0, 10)], "base",
                      Task.from_dict({}), Environment.from_dict({}), {})
    assert results.best(max_loss=0.01).name == "fast-ok"
    assert results.best(max_loss=0.1).name == "fast-bad"
    assert results.best(max_loss=0.0).name == "base"
    assert results.best(max_loss=0.01, objective="size").name == "small"
    results.variants[0] = replace(results.variants[0], status="failed")
    assert results.best() is None


def test_search_runs_trials_as_cached_cells_and_reports(digits_teacher, tmp_path: Path) -> None:
    from optikit.harness.latency import LatencyConfig  # noqa: F401 - the cells import it; fail early if broken
    from optikit.matrix.spec import LatencySpec
    from optikit.search import SearchConfig, search

    config = SearchConfig(model=str(digits_teacher.path), trials=2, batch_size=8, batch_sizes=(8,), max_loss=0.05,
                          latency=LatencySpec(min_iterations=3, min_seconds=0.05, warmup_max=5))
    outcome = search(config, tmp_path / "s")
    assert len(outcome.trials) == 2 and outcome.best is not None and outcome.pareto
    assert (tmp_path / "s" / "report.html").is_file() and (tmp_path / "s" / "search.json").is_file()
    import json

    from optikit.cpu import cpu_features

    # Where it searched: the machine whose choices the space offered, in the summary and both JSON files.
    assert outcome.searched_on.startswith(f"searched on {cpu_features().model} (")
    saved = json.loads((tmp_path / "s" / "search.json").read_text())["machine"]
    assert saved == outcome.results.settings["search"]["machine"] and saved["cpu"] == cpu_features().model
    again = search(config, tmp_path / "s")  # same seed, same out: every cell is reused
    assert [t.variant for t in again.trials] == [t.variant for t in outcome.trials]
    assert [t.loss for t in again.trials] == [t.loss for t in outcome.trials]


def test_image_teachers_other_than_digits_are_offered_the_any_size_cnn_alone() -> None:
    from types import SimpleNamespace

    from optikit.variant import TaskInfo

    resnet = SimpleNamespace(format="hf", task=TaskInfo("image", ("a", "b")), architecture={})
    digits = SimpleNamespace(format="torch", task=TaskInfo("image", tuple("0123456789")),
                             architecture={"name": "digits-cnn"})
    bert = SimpleNamespace(format="hf", task=TaskInfo("text", ("a", "b")), architecture={})
    assert students_for(resnet) == ("image-cnn-small",)
    assert students_for(digits) == ("cnn-small",) == students_for("torch")
    assert students_for(bert) == ("minilm-l2", "minilm-l3")
