"""One comparison: every consumer of Results picks the same variant and states the same figure."""
from __future__ import annotations

import re
from dataclasses import asdict, replace

import pytest

from optikit.harness import compare
from optikit.harness.results import Results, VariantResult
from tests.unit.report.fake import baseline_row, fake_row, results_of


def _disagreeing() -> Results:
    """The ratio of medians and the interleaved ratio disagree, and the smallest variant is the slowest.

    medians-fast: 2.00× by medians, 1.10× [1.02, 1.20] interleaved; paired-fast: 1.25× by medians, 1.60× [1.50,
    1.70] interleaved; small-slow: 4× smaller, 0.23× [0.21, 0.25]. All three lose under a point of macro-F1.
    """
    ci = (-0.006, 0.002)
    return results_of([
        baseline_row(),
        fake_row("medians-fast", f1=0.899, acc=0.899, p50=0.5, size=2_000_000, lineage=["export-onnx"], ci=ci,
                 speedup=(1.10, 1.02, 1.20)),
        fake_row("paired-fast", f1=0.898, acc=0.898, p50=0.8, size=3_000_000, lineage=["export-onnx", "quantize"],
                 ci=ci, speedup=(1.60, 1.50, 1.70)),
        fake_row("small-slow", f1=0.897, acc=0.897, p50=4.0, size=1_000_000, lineage=["prune-structured"], ci=ci,
                 speedup=(0.23, 0.21, 0.25)),
    ])


def test_every_consumer_picks_the_same_variant_and_states_the_same_figure() -> None:
    from optikit.integrations.training import headline_metrics
    from optikit.matrix.gate import evaluate
    from optikit.matrix.spec import MinSpeedup
    from optikit.report.analysis import verdict
    from optikit.report.summary import summary_markdown
    from optikit.search.study import SearchConfig, TrialOutcome, _best, _figures
    from optikit.tracking.mlflow import variant_metrics

    res = _disagreeing()
    choice = compare.best(res, "latency", batch_size=32)
    assert choice is not None and choice.name == "paired-fast" and choice.figure == 1.60
    assert choice.speedup is not None and choice.speedup.source == "interleaved"

    assert res.best(max_loss=0.01).name == "paired-fast"  # not medians-fast, the fastest by medians

    v = verdict(res, 1.0)
    assert v.ship == "paired-fast" and (v.objective, v.batch_size) == ("latency", 32)
    assert v.headline.startswith("Ship paired-fast for speed: 1.60× faster at batch 32")

    frame = res.to_frame()
    top = frame.loc[frame["speedup_b32"].idxmax()]
    assert (top["variant"], top["speedup_b32"], top["speedup_source_b32"]) == ("paired-fast", 1.60, "interleaved")

    md = summary_markdown({"run": res})
    table = {m[0]: float(m[1]) for m in re.findall(r"^\| ([\w-]+) \| [\d.]+ \| [-+\d.]+ \| ([\d.]+) \|", md, re.M)}
    assert max(table, key=table.__getitem__) == "paired-fast" and table["paired-fast"] == 1.60
    assert f"**{v.headline}**" in md  # the report's sentence, word for word

    metrics = headline_metrics(res)
    speedups = {k.split("/")[1]: x for k, x in metrics.items() if k.endswith("/speedup.b32")}
    assert max(speedups, key=speedups.__getitem__) == "paired-fast" and speedups["paired-fast"] == 1.60

    base = res.baseline
    assert variant_metrics(res.variants[2], res)["speedup.b32"] == 1.60

    config = SearchConfig(max_loss=0.01, batch_size=32)
    trials = []
    for i, row in enumerate(res.variants[1:]):
        loss, cost = _figures({"variant": row.name, "row": asdict(row), "baseline": asdict(base)}, config)
        trials.append(TrialOutcome(i, tuple(row.lineage), {}, row.name, "ok", loss, cost))
    assert min(trials, key=lambda t: t.cost).variant == "paired-fast"  # type: ignore[arg-type,return-value]
    assert 1 / next(t.cost for t in trials if t.variant == "paired-fast") == pytest.approx(1.60)  # type: ignore[operator]
    picked = _best(trials, res, config)
    assert picked is not None and picked.variant == "paired-fast"

    gate = {o.rule: o for o in evaluate((MinSpeedup("paired-fast", 1.6), MinSpeedup("paired-fast", 1.61),
                                         MinSpeedup("medians-fast", 1.5)), {"g": res})}
    assert gate["min-speedup(paired-fast ≥ 1.6×)"].passed
    assert "paired-fast is 1.60× at batch 32" in gate["min-speedup(paired-fast ≥ 1.61×)"].detail
    assert "medians-fast is 1.10× at batch 32" in gate["min-speedup(medians-fast ≥ 1.5×)"].detail

    smallest = compare.best(res, "size")
    assert smallest is not None and smallest.name == "small-slow" and smallest.figure == 4.0
    assert res.best(max_loss=0.01, objective="size").name == "small-slow"
    assert smallest.speedup is not None and smallest.speedup.slower and smallest.speedup.phrase() == \
        "4.35× slower at batch 32"


def test_speedup_says_whether_it_is_interleaved_or_a_ratio_of_medians() -> None:
    res = _disagreeing()
    base, fast = res.variants[0], res.variants[1]
    assert compare.speedup(fast, base, 32) == compare.Speedup(1.10, 1.02, 1.20, 32, "interleaved")
    s = compare.speedup(replace(fast, speedup=()), base, 32)
    assert s is not None and s.source == "medians" and s.ratio == pytest.approx(2.0) and s.low is None
    assert s.faster and "ratio of steady medians" in s.detail()


def test_a_speed_claim_needs_the_interval_above_one() -> None:
    straddles = compare.Speedup(1.30, 0.95, 1.60, 32, "interleaved")
    assert not straddles.faster and not straddles.slower
    assert straddles.phrase() == "no measurable speed difference at batch 32"
    assert compare.Speedup(1.02, None, None, 1, "medians").phrase() == "no measurable speed difference at batch 1"
    res = results_of([baseline_row(), fake_row("maybe", f1=0.9, acc=0.9, p50=0.9, size=4_000_000, lineage=["x"],
                                                speedup=(1.30, 0.95, 1.60))])
    assert compare.best(res).name == res.best().name == "baseline"  # type: ignore[union-attr]  # a higher median alone is not a win


def test_loss_budget_is_confident_only_when_the_whole_interval_fits() -> None:
    res = _disagreeing()
    base, v = res.variants[0], res.variants[2]
    check = compare.budget_check(v, base, 1.0)
    assert check is not None and check.within and check.confident and check.delta.points == pytest.approx(-0.2)
    tight = compare.budget_check(v, base, 0.5)
    assert tight is not None and tight.within and not tight.confident
    assert tight.sentence().startswith("Not certain: the 95% interval reaches -0.60")
    unsure = replace(v, significance=None)
    assert "point estimate only" in compare.budget_check(unsure, base, 1.0).sentence()  # type: ignore[union-attr]


def test_throughput_objective_ranks_examples_per_second() -> None:
    res = _disagreeing()
    choice = compare.best(res, "throughput")
    assert choice is not None and choice.name == "medians-fast" and choice.figure == pytest.approx(2.0)


def test_display_names_carry_the_options_that_tell_siblings_apart() -> None:
    def row(name: str, lineage: list[str], i: int) -> VariantResult:
        return VariantResult(id=f"id{i}", name=name, format="onnx", lineage=lineage, parent="t")

    q = "minilm-tags+export-onnx+quantize"
    rows = [VariantResult(id="t", name="minilm-tags", format="hf", lineage=[], parent=None),
            row(q, ["export-onnx:opset=17", "quantize:mode=static,calibration=minmax,per_channel=True"], 1),
            row(q, ["export-onnx:opset=17", "quantize:mode=dynamic,calibration=minmax,per_channel=True"], 2),
            row(q, ["export-onnx:opset=17", "quantize:mode=static,calibration=minmax,per_channel=False"], 3),
            row("out+prune-structured", ["prune-structured:amount=0.3,recover=finetune"], 4),
            row("out+prune-structured", ["prune-structured:amount=0.5,recover=finetune"], 5),
            row("int8", ["export-onnx", "quantize:mode=dynamic"], 6),  # a matrix's name: unique, kept
            row("twice", ["x:a=1"], 7), row("twice", ["x:a=1"], 8)]
    assert compare.display_names(rows) == [
        "minilm-tags",
        f"{q}:mode=static,per_channel=True", f"{q}:mode=dynamic,per_channel=True",
        f"{q}:mode=static,per_channel=False",
        "out+prune-structured:amount=0.3", "out+prune-structured:amount=0.5",
        "int8", "twice #id7", "twice #id8"]
