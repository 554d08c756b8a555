"""The long frame: one row per variant × batch size × figure, its comparison figures those of harness/compare."""
from __future__ import annotations

import math
from dataclasses import replace

import pandas as pd
import pytest

from optikit.harness import compare
from optikit.harness.results import LONG_COLUMNS, Results
from tests.unit.harness.test_compare import _disagreeing
from tests.unit.report.fake import fake_results, ten_variants

UNITS = {"ms", "per_s", "bytes", "ratio", "fraction", "points", "count", "nats", "score", "probability", "MiB"}


def _row(frame: pd.DataFrame, variant: str, figure: str, batch: int | None = None) -> pd.Series:
    hit = frame[(frame["display_name"] == variant) & (frame["figure"] == figure)
                & (frame["batch_size"].isna() if batch is None else frame["batch_size"] == batch)]
    assert len(hit) == 1, (variant, figure, batch, len(hit))
    return hit.iloc[0]


def test_long_frame_has_one_row_per_variant_batch_size_and_figure() -> None:
    res = fake_results()
    frame = res.to_long_frame()
    assert list(frame.columns) == list(LONG_COLUMNS)
    assert not frame.duplicated(["variant_id", "batch_size", "figure"]).any()
    assert set(frame["variant"]) == {"baseline", "int8"}  # the failed cell has no figures (its error is in to_frame)
    assert set(frame["unit"]) <= UNITS
    per_batch = set(frame.loc[frame["batch_size"].notna(), "figure"])
    assert {"latency_ms", "p50_ms", "p99_ms", "throughput_per_s", "speedup"} <= per_batch
    assert sorted(frame.loc[frame["figure"] == "latency_ms", "batch_size"].unique()) == [1, 32]
    size = _row(frame, "int8", "size_bytes")
    assert (size["value"], size["unit"]) == (1_000_000, "bytes") and pd.isna(size["batch_size"])
    assert _row(frame, "int8", "latency_ms", 32)["unit"] == "ms"
    assert _row(frame, "int8", "f1_macro")["unit"] == "fraction"


def test_long_frame_states_the_comparison_modules_figures_with_their_intervals() -> None:
    res = _disagreeing()
    frame = res.to_long_frame()
    wide = res.to_frame().set_index("variant")
    base = res.baseline
    for v in res.variants[1:]:
        s = compare.speedup(v, base, 32)
        assert s is not None
        row = _row(frame, v.name, "speedup", 32)
        assert (row["value"], row["low"], row["high"], row["source"], row["unit"]) == \
            (s.ratio, s.low, s.high, "interleaved", "ratio")
        assert row["value"] == wide.loc[v.name, "speedup_b32"]
        assert _row(frame, v.name, "size_ratio")["value"] == compare.size_ratio(v, base) == wide.loc[v.name, "size_ratio"]
        d = compare.delta(v, base, "f1_macro")
        assert d is not None and d.interval_points is not None
        delta = _row(frame, v.name, "f1_macro_delta_points")
        assert (delta["value"], delta["low"], delta["high"], delta["unit"]) == (d.points, *d.interval_points, "points")
    # A figure without a measured interval has none: the baseline against itself, by medians.
    own = _row(frame, "baseline", "speedup", 32)
    assert own["value"] == 1.0 and own["source"] == "medians" and math.isnan(own["low"])


def test_long_frame_names_siblings_apart_and_keeps_the_matrix_name() -> None:
    res = ten_variants()
    frame = res.to_long_frame()
    names = frame.drop_duplicates("variant_id").set_index("variant_id")
    assert names.loc["id-q0", "variant"] == "digits-cnn+export-onnx+quantize"
    assert names.loc["id-q0", "display_name"] == "digits-cnn+export-onnx+quantize:mode=static"
    assert frame["variant_id"].nunique() == 10


def test_long_frame_of_results_without_a_measured_baseline_keeps_each_variants_own_figures() -> None:
    res = fake_results()
    res.variants[0] = replace(res.variants[0], status="failed")
    frame = res.to_long_frame()
    assert "int8" in set(frame["variant"]) and "speedup" not in set(frame["figure"])
    assert not any(f.endswith(("_delta_points", "_ratio")) for f in frame["figure"])


def test_long_frame_round_trips_through_csv_with_empty_batch_sizes(tmp_path) -> None:
    path = tmp_path / "long.csv"
    fake_results().to_long_frame().to_csv(path, index=False)
    back = pd.read_csv(path)
    assert back["batch_size"].isna().any() and set(back["batch_size"].dropna()) == {1, 32}
    low = back.loc[(back["figure"] == "f1_macro_delta_points") & (back["variant"] == "int8"), "low"].iloc[0]
    assert low == pytest.approx(-0.8)


def test_results_from_json_give_the_same_long_frame() -> None:
    res = fake_results()
    again = Results.from_dict(res.to_dict())
    pd.testing.assert_frame_equal(res.to_long_frame(), again.to_long_frame())
