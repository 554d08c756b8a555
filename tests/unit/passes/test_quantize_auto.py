"""quantize mode=auto: the graph picks the method, the CPU the number formats, and a timed trial the layers."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from optikit.cpu import CpuFeatures
from optikit.errors import ConfigError
from optikit.passes._ort_auto import (
    TrialRow,
    choose,
    number_formats,
    static_candidates,
    time_against_parent,
    trial_feeds,
)
from optikit.passes.base import PassContext, make_pass
from optikit.variant import Variant
from tests.conftest import pass_context


@pytest.fixture(scope="module")
def mctx(tmp_path_factory: pytest.TempPathFactory) -> PassContext:
    return pass_context(tmp_path_factory.mktemp("autovariants"), threads=1)


@pytest.fixture(scope="module")
def digits_onnx(digits_teacher: Variant, mctx: PassContext) -> Variant:
    return make_pass("export-onnx").run(digits_teacher, mctx)


def _cpu(*flags: str, machine: str = "x86_64") -> CpuFeatures:
    return CpuFeatures("test cpu", machine, frozenset(flags))


def test_vnni_or_amx_gets_full_range_weights_and_avx2_alone_gets_seven_bits():
    assert number_formats(_cpu("avx2", "avx512_vnni")).reduce_range is False
    assert number_formats(_cpu("avx2", "amx_int8")).reduce_range is False
    avx2 = number_formats(_cpu("avx2"))
    assert avx2.reduce_range is True and "no VNNI" in avx2.reduce_range_reason


def test_x86_takes_uint8_activations_and_arm_dot_product_takes_int8():
    assert number_formats(_cpu("avx2", "avx512_vnni")).activation_type == "uint8"
    arm = number_formats(_cpu("asimddp", machine="aarch64"))
    assert arm.activation_type == "int8" and arm.reduce_range is False


def test_an_explicit_reduce_range_wins_over_the_cpu():
    assert number_formats(_cpu("avx2"), "false").reduce_range is False
    assert number_formats(_cpu("avx512_vnni"), "true").reduce_range_reason == "set by the user"


def _row(name: str, loss: float, **speedups: float) -> TrialRow:
    return TrialRow(name, name, 0.9 - loss, loss, {int(b[1:]): s for b, s in speedups.items()})


def test_choose_prefers_a_candidate_that_is_slower_nowhere_over_a_faster_one_that_is_slower_somewhere():
    rows = [_row("all", 0.0, b1=0.85, b32=1.9), _row("convs", 0.0, b1=1.2, b32=1.45)]
    best, reason = choose(rows, 0.01)
    assert best.name == "convs" and "faster than fp32 at every batch size" in reason


def test_choose_keeps_the_more_quantized_candidate_when_another_is_faster_only_within_noise():
    rows = [_row("all", 0.0, b1=1.10, b32=1.50), _row("convs", 0.0, b1=1.12, b32=1.55)]  # 3% apart: a tie
    assert choose(rows, 0.01)[0].name == "all"
    rows = [_row("all", 0.0, b1=1.01, b32=1.20), _row("convs", 0.0, b1=1.20, b32=1.45)]  # 19% apart
    assert choose(rows, 0.01)[0].name == "convs"


def test_choose_never_takes_a_candidate_over_the_accuracy_budget():
    rows = [_row("fast-but-wrong", 0.05, b1=3.0, b32=3.0), _row("ok", 0.0, b1=1.1, b32=1.1)]
    assert choose(rows, 0.01)[0].name == "ok"


def test_choose_says_so_when_every_candidate_is_slower_somewhere():
    best, reason = choose([_row("a", 0.0, b1=0.8, b32=1.5), _row("b", 0.0, b1=0.9, b32=1.2)], 0.01)
    assert best.name == "a" and "slower than fp32 at some batch size" in reason  # geometric mean 1.10 vs 1.04


def test_choose_keeps_the_most_accurate_when_none_is_within_budget():
    best, reason = choose([_row("a", 0.05, b1=2, b32=2), _row("b", 0.03, b1=1, b32=1)], 0.01)
    assert best.name == "b" and "no candidate stays within" in reason


def test_a_cnn_gets_layer_set_candidates_including_its_stem(digits_onnx: Variant):
    names = {c.name: c for c in static_candidates(digits_onnx.path / "model.onnx", ["MatMul", "Gemm", "Conv"], False)}
    assert set(names) == {"all", "convolutions", "all-but-stem", "convolutions-but-stem"}
    assert names["convolutions"].op_types == ("Conv",) and len(names["all-but-stem"].exclude_nodes) == 1


def test_layers_the_user_named_are_not_second_guessed(digits_onnx: Variant):
    only = static_candidates(digits_onnx.path / "model.onnx", ["Conv"], user_chose_layers=True)
    assert [c.name for c in only] == ["all"] and only[0].op_types == ("Conv",)


def test_trial_feeds_cut_each_batch_size_from_the_calibration_batches():
    batches = [{"input_ids": np.ones((8, n), np.int64), "attention_mask": np.ones((8, n), np.int64)} for n in (5, 9)]
    feeds = trial_feeds(batches, (1, 16, 32))
    assert set(feeds) == {1, 16}  # 16 examples cannot fill a batch of 32
    assert feeds[16]["input_ids"].shape == (16, 9) and feeds[16]["attention_mask"][:8, 5:].sum() == 0


def test_timing_against_the_parent_gives_a_speedup_per_candidate_and_batch_size(digits_onnx: Variant):
    model = digits_onnx.path / "model.onnx"
    pixels = np.zeros((32, 1, 8, 8), np.float32)
    out = time_against_parent(model, {"same": model}, {1: {"pixel_values": pixels[:1]}, 32: {"pixel_values": pixels}},
                              threads=1, seconds=0.05, rounds=3)
    assert set(out) == {"same"} and set(out["same"]) == {1, 32} and all(s > 0 for s in out["same"].values())


def test_quantize_with_no_options_times_layer_sets_on_a_cnn_and_records_the_trial(digits_onnx, mctx):
    q = make_pass("quantize:trial_seconds=0.1").run(digits_onnx, mctx)
    trial = q.report["trial"]
    names = [c["name"] for c in trial["candidates"]]
    assert trial["chosen"] in names and len(names) == 4 and trial["reason"]
    chosen = next(c for c in trial["candidates"] if c["name"] == trial["chosen"])
    assert chosen["loss"] <= trial["max_loss"] + 1e-9 or "no candidate stays within" in trial["reason"]
    assert set(chosen["speedup"]) == {"1", "32"} and trial["threads"] == mctx.threads
    assert not list(Path(q.path).glob("model.trial-*"))  # the candidates' files are gone


def test_no_trial_when_the_user_names_the_layers_or_turns_it_off(digits_onnx, mctx):
    assert "trial" not in make_pass("quantize:trial_seconds=0").run(digits_onnx, mctx).report
    assert "trial" not in make_pass("quantize:op_types=Conv").run(digits_onnx, mctx).report


def test_trial_seconds_is_bounded():
    with pytest.raises(ConfigError, match="trial_seconds"):
        make_pass("quantize:trial_seconds=-1")


def test_with_several_threads_the_trial_also_times_each_layer_set_on_one_thread(digits_onnx, tmp_path):
    ctx = pass_context(tmp_path)
    q = make_pass("quantize:trial_seconds=0.05").run(digits_onnx, ctx)
    rows = {c["name"]: c for c in q.report["trial"]["candidates"]}
    assert len(rows) == 8 and rows["all@1-thread"]["threads"] == 1 and "threads" not in rows["all"]
    cap = q.report["trial"].get("intra_op_threads")
    if cap:  # the runner honours what the trial measured
        from optikit.runners import load_runner

        assert q.report["runtime"]["intra_op_threads"] == 1 and load_runner(q, threads=2).threads == 1
    else:
        assert "runtime" not in q.report


def test_an_onnx_runner_uses_no_more_threads_than_the_variant_runs_fastest_with(digits_onnx):
    import dataclasses

    from optikit.runners import load_runner

    capped = dataclasses.replace(digits_onnx, report={**digits_onnx.report, "runtime": {"intra_op_threads": 1}})
    assert load_runner(capped, threads=2).threads == 1 and load_runner(capped, threads=2).info()["threads"] == 1
    assert load_runner(digits_onnx, threads=2).threads == 2


def test_choose_can_keep_a_layer_set_on_one_thread():
    rows = [TrialRow("all", "all", 0.9, 0.0, {1: 0.8, 32: 0.8}),
            TrialRow("all@1-thread", "all on 1 thread", 0.9, 0.0, {1: 1.2, 32: 1.6}, threads=1)]
    best, _ = choose(rows, 0.01)
    assert best.name == "all@1-thread" and best.threads == 1
