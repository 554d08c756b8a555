"""End to end: digits teacher + int8 variant measured in child processes; crashed children become failed rows;
every results file validates against optikit/results.schema.json."""
from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

from optikit.harness.bench import BenchConfig, bench
from optikit.harness.latency import LatencyConfig
from optikit.harness.results import Results
from optikit.harness.significance import SignificanceConfig
from optikit.harness.timing import SpeedupConfig
from optikit.variant import load_variant

FAST = BenchConfig(latency=LatencyConfig(batch_sizes=(1, 8), min_iterations=5, min_seconds=0.0, warmup_max=10),
                   speedup=SpeedupConfig(rounds=4, calls_per_round=2, warmup=1),
                   significance=SignificanceConfig(resamples=50), threads=1)


def validate(results: Results) -> None:
    schema = json.loads(resources.files("optikit").joinpath("results.schema.json").read_text(encoding="utf-8"))
    jsonschema.validate(json.loads(json.dumps(results.to_dict())), schema,
                        cls=jsonschema.Draft202012Validator)


def _copy(variant, root: Path, name: str):
    target = root / name
    shutil.copytree(variant.path, target)
    manifest = json.loads((target / "variant.json").read_text())
    manifest.update(id=f"{name}-id", name=name)
    (target / "variant.json").write_text(json.dumps(manifest))
    return target


def test_bench_isolates_variants_and_records_crashes(digits_teacher, ctx, tmp_path, monkeypatch) -> None:
    from optikit.passes.base import make_pass, run_chain

    *_, int8 = run_chain(digits_teacher, [make_pass("quantize:mode=dynamic")], ctx)
    garbage = _copy(int8, tmp_path, "garbage")
    (garbage / "model.onnx").write_bytes(b"not an onnx file")
    aborted = _copy(digits_teacher, tmp_path, "aborted")
    monkeypatch.setenv("OPTIKIT_TEST_ABORT", "aborted")
    variants = [digits_teacher, load_variant(garbage), int8, load_variant(aborted)]
    results = bench(variants, FAST)
    base, bad, q, dead = results.variants
    assert [v.status for v in results.variants] == ["ok", "failed", "ok", "failed"]
    assert "onnxruntime cannot load" in bad.error
    assert "SIGABRT" in dead.error
    assert base.is_baseline and base.peak_rss_mb > 0 and q.peak_rss_mb > 0
    assert [s.batch_size for s in q.speedup] == [1, 8] and all(s.rounds == 4 for s in q.speedup)
    assert q.diagnostics.quantized_ops > 0 and base.diagnostics.float_ops > 0
    assert set(q.significance.deltas) >= {"accuracy", "log_loss"} and q.quadrant.label
    assert q.behavioral.suite == "digits" and set(q.behavioral.by_type) == {"mft", "inv", "dir"}
    assert q.fidelity.flips_right_to_wrong == sum(f.kind == "right_to_wrong" for f in q.fidelity.flipped)
    assert q.size.bytes_on_disk == sum(p.stat().st_size for p in int8.path.rglob("*")
                                          if p.is_file() and p.name != "variant.json")
    validate(results)
    frame = results.to_frame()
    assert list(frame["status"]) == ["ok", "failed", "ok", "failed"] and "accuracy_delta" in frame
    # What lands on disk validates too, and reads back.
    out = tmp_path / "results.json"
    out.write_text(json.dumps(results.to_dict()))
    validate(Results.load(out))


def test_latency_repeated_in_fresh_processes_is_pooled(digits_teacher) -> None:
    from dataclasses import replace

    config = replace(FAST, processes=3, suite="none", latency=replace(FAST.latency, batch_sizes=(2,), blocks=2))
    results = bench([digits_teacher], config)
    (lat,) = results.variants[0].latency
    # Three processes, five calls each at least: every call pooled, one steady figure per process, their median.
    assert len(lat.process_steady_ms) == 3 and lat.samples >= 15
    assert lat.steady_p50_ms == pytest.approx(sorted(lat.process_steady_ms)[1])
    assert "latency_samples" not in json.dumps(results.to_dict())
    validate(results)


@pytest.mark.slow
def test_bench_text_slices_flips_and_user_suite_in_process(text_teacher, tmp_path) -> None:
    suite = tmp_path / "suite.toml"
    suite.write_text('[suite]\nname = "mini"\n[[case]]\nid = "m1"\ntype = "mft"\ntext = "image pixel camera"\n'
                     'label = "vision"\n[[case]]\nid = "i1"\ntype = "inv"\ntext = "docker kubernetes serving"\n'
                     'perturbed = ["dockr kubernetes serving"]\n[[case]]\nid = "d1"\ntype = "dir"\n'
                     'text = "a tool"\nperturbed = ["a tool for translation of sentences"]\ntoward = "language"\n')
    config = BenchConfig(latency=LatencyConfig(batch_sizes=(2,), min_iterations=3, min_seconds=0.0, warmup_max=5),
                         speedup=SpeedupConfig(rounds=4, calls_per_round=1, warmup=1),
                         significance=SignificanceConfig(resamples=50), threads=1, isolate=False,
                         suite=str(suite), slices=("tag=ops",), pad_to=16)
    results = bench([text_teacher, text_teacher], config, slices={"first half": lambda f: f.index < len(f) // 2})
    row = results.variants[1]
    slices = row.alignment.per_slice
    assert {"tag=ops", "first half"} <= set(slices) and any(k.startswith("short") for k in slices)
    assert slices["tag=ops"].n == results.task.slices["tag=ops"] > 0
    assert row.behavioral.cases == 3 and row.behavioral.regressions == ()
    assert row.quadrant.label == "no significant change" and row.fidelity.agreement == 1.0
    assert row.peak_rss_mb is None and 2 in row.tokenization_ms
    validate(results)


def test_bench_reads_the_load_around_every_timing_and_flags_a_starved_machine(digits_teacher) -> None:
    from dataclasses import replace

    from optikit.harness.conditions import LoadReading

    readings: list[LoadReading] = []

    def starved() -> LoadReading:  # one other process holding a whole core of two, as in optikit issue 12
        readings.append(LoadReading(cpu_count=2, run_queue=3, other_cpu_cores=1.0))
        return readings[-1]

    results = bench([digits_teacher, digits_teacher], replace(FAST, threads=2, suite="none"), load_reader=starved)
    assert len(readings) == 1 + 2 * 2  # before it starts, then before and after each variant
    assert "2 measuring threads + 1.0 cores busy elsewhere > 2 cores" in results.settings["preflight"]
    for row in results.variants:
        assert row.conditions is not None and row.conditions.starved and row.conditions.before == readings[1]
    validate(results)
    again = Results.from_dict(json.loads(json.dumps(results.to_dict())))
    assert again.variants[1].conditions == results.variants[1].conditions


def test_quality_is_measured_in_every_timed_batch_shape_and_the_verdict_uses_its_own(digits_teacher, tmp_path) -> None:
    """A model whose predictions depend on the batch (as dynamic int8's do, through per-batch activation scales):
    here the batch's mean logit is subtracted, so one example alone always gets logits of 0."""
    from dataclasses import replace

    import torch

    import optikit
    from optikit.harness import compare
    from optikit.models import load_module
    from optikit.report.analysis import verdict

    class BatchDependent(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = self.inner(x)
            return logits - logits.mean(0, keepdim=True)

    odd = optikit.from_module(BatchDependent(load_module(digits_teacher)).eval(), data="digits", home=tmp_path)
    config = replace(FAST, suite="none", latency=replace(FAST.latency, batch_sizes=(1, 32)))
    results = bench([digits_teacher, load_variant(odd.path)], config)
    base, row = results.variants
    assert not base.batch_dependent and row.batch_dependent
    one, many = row.quality_at(1), row.quality_at(32)
    assert one is not None and many is not None and row.alignment is not None
    assert one.same_as_eval < 0.5 and one.f1_macro < 0.5 < row.alignment.f1_macro  # alone: every logit is 0
    assert many.same_as_eval > 0.5 and one.deltas["f1_macro"].high < 0  # the loss at batch 1 is significant
    # The budget check speaks of the batch it is asked about: at batch 1 the loss is the batch-1 predictions' loss.
    at_one = compare.delta(row, base, "f1_macro", 1)
    assert at_one is not None and at_one.batch_size == 1 and at_one.points < -40
    at_eval = compare.delta(row, base, "f1_macro")
    assert at_eval is not None and at_eval.points > -20
    assert any("depend on the batch" in n for n in row.notes)
    v = verdict(results, 1.0)  # the headline batch is 32: its reasons state the batch-32 predictions' delta
    assert v.ship is None or "at batch 32" in " ".join(v.reasons)
    assert compare.best(results, batch_size=1).is_baseline  # type: ignore[union-attr]  # alone it loses > 40 points
    frame = results.to_long_frame()
    assert set(frame.loc[frame["figure"] == "f1_macro_at_batch", "batch_size"]) == {1, 32}
    validate(results)
