"""Gate rules against measured Results: each failure names its rule and the variant that broke it."""
from __future__ import annotations

from optikit.matrix.gate import evaluate
from optikit.matrix.spec import MaxF1Drop, MinSizeRatio, MinSpeedup, NoFailures
from tests.unit.report.fake import fake_results


def test_gate_rules_pass_and_fail_with_reasons() -> None:
    res = fake_results(int8_f1=0.87)
    rules = (MaxF1Drop(points=1.0), MaxF1Drop(points=5.0, variants=("int8",)), MinSpeedup("int8", 1.5, 1),
             MinSpeedup("int8", 5.0), MinSizeRatio("int8", 3.0), NoFailures())
    out = {o.rule: o for o in evaluate(rules, {"g": res})}
    assert not out["max-f1-drop(1 points)"].passed
    assert "int8 lost 3.00 points macro-F1 (at most 1 allowed)" in out["max-f1-drop(1 points)"].detail
    assert out["max-f1-drop(5 points)"].passed
    assert out["min-speedup(int8 ≥ 1.5×)"].passed
    assert "at batch 32 (at least 5× required)" in out["min-speedup(int8 ≥ 5×)"].detail
    assert out["min-size-ratio(int8 ≥ 3×)"].passed
    assert not out["no-failures"].passed and "broken failed (PassError: boom)" in out["no-failures"].detail


def test_gate_rule_on_a_failed_variant_fails() -> None:
    [o] = evaluate((MinSizeRatio("broken", 1.0),), {"g": fake_results()})
    assert not o.passed and o.detail == "broken was not measured"


def test_size_rule_can_count_the_weight_files_alone() -> None:
    res = fake_results()
    base = next(v for v in res.variants if v.is_baseline)
    int8 = next(v for v in res.variants if v.name == "int8")
    assert base.size is not None and int8.size is not None
    artifact = base.size.bytes_on_disk / int8.size.bytes_on_disk
    weights = base.size.weight_bytes / int8.size.weight_bytes
    assert weights > artifact  # the same tokenizer bytes on both sides dilute the artifact ratio
    threshold = (artifact + weights) / 2
    [on_disk, on_weights] = evaluate((MinSizeRatio("int8", threshold), MinSizeRatio("int8", threshold, of="weights")),
                                     {"g": res})
    assert not on_disk.passed and "int8's artifact is" in on_disk.detail
    assert on_weights.passed


def test_speedup_against_another_variant_is_the_ratio_of_their_speedups_over_the_baseline() -> None:
    from tests.unit.report.fake import baseline_row, fake_row, results_of

    parent = fake_row("onnx", f1=0.9, acc=0.9, p50=0.5, size=4_000_000, lineage=["export-onnx"], speedup=(2.0, 1.9, 2.1))
    child = fake_row("int8", f1=0.9, acc=0.9, p50=0.55, size=1_000_000, lineage=["export-onnx", "quantize"],
                     speedup=(1.8, 1.7, 1.9))
    res = results_of([baseline_row(), parent, child])
    [slower, vs_base] = evaluate((MinSpeedup("int8", 1.0, 1, against="onnx"), MinSpeedup("int8", 1.5, 1)), {"": res})
    assert not slower.passed and slower.rule == "min-speedup(int8 vs onnx ≥ 1×)"
    assert slower.detail == "int8 is 0.90× against onnx at batch 1 (at least 1× required)"
    assert vs_base.passed


def test_a_speedup_rule_against_an_unknown_or_the_same_variant_is_refused() -> None:
    import pytest

    from optikit.errors import ConfigError

    with pytest.raises(ConfigError, match="against itself"):
        MinSpeedup("int8", 1.0, against="int8")


def test_a_cpu_specific_target_applies_only_to_that_kind_of_cpu() -> None:
    import dataclasses

    from optikit.harness.records import CpuInfo

    def on(flags: dict[str, bool]):
        res = fake_results()
        return dataclasses.replace(res, environment=dataclasses.replace(res.environment,
                                                                       cpu=CpuInfo("Some CPU", "x86_64", flags)))

    vnni, avx2 = on({"avx2": True, "avx512_vnni": True}), on({"avx2": True, "avx512_vnni": False})
    rules = (MinSpeedup("int8", 50.0, 1, cpu="vnni"), MinSpeedup("int8", 1.5, 1, cpu="no-vnni"))
    [fast_vnni, modest_avx2] = evaluate(rules, {"": vnni})
    assert not fast_vnni.passed and fast_vnni.rule == "min-speedup(int8 ≥ 50× on vnni)"
    assert modest_avx2.passed and modest_avx2.detail.startswith("skipped: a target for no-vnni CPUs")
    [skipped, held] = evaluate(rules, {"": avx2})
    assert skipped.passed and "lacks VNNI/AMX" in skipped.detail and held.detail == "holds"


def _parent_and_child(child_speedup: tuple[float, float, float]):
    from tests.unit.report.fake import baseline_row, fake_row, results_of

    parent = fake_row("onnx", f1=0.9, acc=0.9, p50=0.5, size=4_000_000, lineage=["export-onnx"], speedup=(2.0, 1.9, 2.1))
    child = fake_row("int8", f1=0.9, acc=0.9, p50=0.55, size=1_000_000, lineage=["export-onnx", "quantize"],
                     speedup=child_speedup)
    return results_of([baseline_row(), parent, child])


def test_a_significant_rule_fails_only_beyond_the_noise_of_both_intervals() -> None:
    rule = MinSpeedup("int8", 1.0, 1, against="onnx", significant=True)
    [within_noise] = evaluate((rule,), {"": _parent_and_child((1.95, 1.85, 2.05))})  # 0.98× but 2.05/1.9 = 1.08
    assert within_noise.passed
    [slower] = evaluate((rule,), {"": _parent_and_child((1.6, 1.55, 1.65))})  # 1.65/1.9 = 0.87 at best
    assert not slower.passed and "0.80× against onnx at batch 1, 0.87× at best within the intervals" in slower.detail


def test_an_advisory_target_is_reported_but_never_fails_the_gate() -> None:
    [missed, met] = evaluate((MinSpeedup("int8", 3.0, 1, advisory=True, name="int8-3x"),
                              MinSpeedup("int8", 1.5, 1, advisory=True, name="int8-1.5x")),
                             {"": _parent_and_child((1.8, 1.7, 1.9))})
    assert missed.passed and missed.advisory and missed.detail.startswith("target missed: int8 is 1.80×")
    assert met.passed and met.detail == "target met"


def test_the_summary_shows_a_missed_target_apart_from_failures() -> None:
    from optikit.report.summary import summary_markdown

    res = _parent_and_child((1.8, 1.7, 1.9))
    gate = [o.to_dict() for o in evaluate((MinSpeedup("int8", 3.0, 1, advisory=True, name="int8-3x"),), {"": res})]
    text = summary_markdown({"": res}, gate=gate)
    assert "**Gate: passed**" in text and "⚠️ `int8-3x` (a target, not gating): target missed" in text


def test_the_report_renders_gating_rules_and_targets() -> None:
    from optikit.report.html import render_html

    res = _parent_and_child((1.8, 1.7, 1.9))
    gate = [o.to_dict() for o in evaluate((MinSpeedup("int8", 3.0, 1, advisory=True, name="int8-3x"),
                                           MinSpeedup("int8", 1.0, 1, name="int8-1x")), {"": res})]
    html = render_html(dataclasses_replace_settings(res, gate))
    assert "target missed" in html and ">pass<" in html


def dataclasses_replace_settings(res, gate):
    import dataclasses

    return dataclasses.replace(res, settings={**res.settings, "gate": gate})
