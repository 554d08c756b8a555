"""The report's "What this machine can do": the CPU's int8 sets, each quantized variant's choices, and misfits."""
from __future__ import annotations

import dataclasses

from optikit.harness.records import CpuInfo
from optikit.report.html import render_html
from optikit.report.machine import capabilities, choices, misfits
from tests.unit.report.fake import fake_results

VNNI_CPU = {"avx2": True, "avx512f": True, "avx512_vnni": True, "avx_vnni": False, "amx_int8": True,
            "amx_bf16": True, "dotprod": False}
AVX2_CPU = {**{k: False for k in VNNI_CPU}, "avx2": True}
QUANTIZED_ON_VNNI = {"backend": "onnxruntime", "mode": "static", "mode_reason": "static: the graph has 3 Conv",
                     "reduce_range": False, "reduce_range_reason": "the CPU has amx_int8/avx512_vnni",
                     "activation_type": "uint8", "made_on": {"model": "Xeon with AMX", "int8_flags": VNNI_CPU},
                     "trial": {"chosen": "convolutions-but-stem", "reason": "the fastest of 4 timed candidates"}}


def _measured_on(model: str, flags: dict[str, bool], report: dict) -> object:
    results = fake_results()
    variants = tuple(dataclasses.replace(v, pass_report=report) if not v.is_baseline and v.status == "ok" else v
                     for v in results.variants)
    env = dataclasses.replace(results.environment, cpu=CpuInfo(model, "x86_64", flags))
    return dataclasses.replace(results, variants=variants, environment=env)


def test_vnni_weights_and_a_timed_layer_choice_do_not_fit_an_avx2_machine():
    found = misfits(QUANTIZED_ON_VNNI, "EPYC (AVX2)", AVX2_CPU)
    assert len(found) == 2 and "VNNI" in found[0] and "timing on Xeon with AMX" in found[1]


def test_choices_made_on_the_measuring_machine_fit_it():
    assert misfits(QUANTIZED_ON_VNNI, "Xeon with AMX", VNNI_CPU) == []
    assert misfits({"backend": "onnxruntime", "mode": "dynamic"}, "any", AVX2_CPU) == []  # made before it was recorded


def test_the_report_lists_the_cpu_sets_and_every_quantized_variants_choices():
    results = _measured_on("EPYC (AVX2)", AVX2_CPU, QUANTIZED_ON_VNNI)
    caps = {name: present for name, present, _ in capabilities(results)}
    assert caps["avx2"] is True and caps["avx512_vnni"] is False
    rows = choices(results)
    assert len(rows) == 1 and rows[0].made_on == "Xeon with AMX"
    assert any("full 8-bit weights" in line for line in rows[0].choices)
    assert any(line.startswith("layers: convolutions-but-stem") for line in rows[0].choices)
    html = render_html(results)
    assert 'id="machine"' in html and "Does not fit this machine" in html


def test_variants_that_were_not_quantized_have_no_choices_row():
    assert choices(_measured_on("Xeon with AMX", VNNI_CPU, {})) == []


def test_the_summary_names_a_variant_that_does_not_fit_this_machine():
    from optikit.report.summary import summary_markdown

    text = summary_markdown({"": _measured_on("EPYC (AVX2)", AVX2_CPU, QUANTIZED_ON_VNNI)})
    assert "does not fit this machine" in text and "VNNI" in text
    assert "does not fit" not in summary_markdown({"": _measured_on("Xeon with AMX", VNNI_CPU, QUANTIZED_ON_VNNI)})
