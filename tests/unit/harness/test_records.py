"""Typed results: built where measured, JSON only at the edge, and every results.json written before still loads."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from optikit.harness.latency import Latency
from optikit.harness.records import Alignment, Capability, Interval, Significance, plain
from optikit.harness.results import Results, VariantResult
from optikit.report.analysis import verdict
from optikit.report.outputs import write_outputs
from tests.unit.report.fake import fake_results

FIXTURES = Path(__file__).parents[2] / "fixtures"
# The CI matrix's results.json and summary.md as written by optikit before results were typed (schema 2, dict rows).
BEFORE = FIXTURES / "results-before-typed-records.json"


def _strict(text: str) -> object:
    def refuse(name: str) -> object:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_a_results_file_written_before_typed_records_loads_typed_and_writes_back_unchanged() -> None:
    raw = json.loads(BEFORE.read_text(encoding="utf-8"))
    results = Results.load(BEFORE)
    static = next(v for v in results.variants if v.name == "int8-static")
    assert isinstance(static.latency[0], Latency) and static.latency[0].batch_size == 1
    assert static.alignment is not None and static.alignment.f1_macro == pytest.approx(0.9943556, abs=1e-6)
    assert static.significance is not None and isinstance(static.significance.deltas["f1_macro"], Interval)
    assert results.task.label_names[:2] == ("0", "1") and results.environment.threads == 2
    # Schema 3 only adds: the typed records write exactly the JSON they were read from, plus empty `conditions`
    # and `quality_by_batch`.
    written = json.loads(json.dumps(results.to_dict()))
    assert (written.pop("schema"), raw.pop("schema")) == (3, 2)
    assert all(row.pop("conditions") == {} and row.pop("quality_by_batch") == [] for row in written["variants"])
    assert written == raw


def test_a_results_file_written_before_typed_records_renders_the_same_summary(tmp_path: Path) -> None:
    results = Results.load(BEFORE)
    paths = write_outputs(results, tmp_path)
    before = (FIXTURES / "summary-before-typed-records.md").read_text(encoding="utf-8")
    # The heading names the matrix (`bench ci`), which a single re-rendered group does not know; the rest is equal.
    assert paths["md"].read_text(encoding="utf-8").split("\n")[1:] == before.split("\n")[1:]
    assert verdict(results, 1.0).headline == "Ship int8-static for speed: 2.18× faster at batch 32, 3.47× smaller."
    assert "Ship int8-static for speed" in paths["html"].read_text(encoding="utf-8")


def test_non_finite_figures_are_null_in_json_and_nan_when_read_back() -> None:
    res = fake_results()
    int8 = res.variants[1]
    assert int8.capability is not None
    res.variants[1] = dataclasses.replace(int8, capability=dataclasses.replace(int8.capability, ece=math.nan),
                                          peak_rss_mb=math.inf)
    text = json.dumps(res.to_dict())
    row = _strict(text)["variants"][1]  # type: ignore[index]
    assert row["capability"]["ece"] is None and row["peak_rss_mb"] is None
    back = Results.from_dict(json.loads(text)).variants[1]
    assert back.capability is not None and math.isnan(back.capability.ece) and back.peak_rss_mb is None


def test_records_are_immutable_and_a_failed_row_has_no_figures() -> None:
    res = fake_results()
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.variants[1].name = "renamed"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.variants[1].latency[0].p50_ms = 0.0  # type: ignore[misc]
    broken = next(v for v in res.variants if v.status == "failed")
    assert (broken.alignment, broken.size, broken.latency, broken.measured) == (None, None, (), False)
    # …and it is written with empty records, as schema 2 always wrote a failed row.
    assert broken.to_dict()["alignment"] == {} and broken.to_dict()["latency"] == []


def test_a_row_from_an_older_harness_gets_neutral_defaults_and_ignores_unknown_keys() -> None:
    row = VariantResult.from_dict({"id": "a", "name": "a", "lineage": ["x"], "parent": None, "a_future_field": 1,
                                   "alignment": {"accuracy": 0.5, "f1_macro": 0.4},
                                   "latency": [{"batch_size": 8, "p50_ms": 2.0}], "tokenization_ms": {"8": 0.3}})
    a = row.alignment
    assert isinstance(a, Alignment) and (a.accuracy, a.f1_macro, a.f1_weighted) == (0.5, 0.4, 0.4)
    assert math.isnan(a.precision_macro) and a.per_class == {}  # not recorded: NaN, never a made-up figure
    lat = row.latency_at(8)
    assert lat is not None and lat.headline_ms == 2.0 and lat.throughput_per_s == pytest.approx(4000.0)
    assert row.tokenization_ms == {8: 0.3} and row.capability is None and row.format == "?"


def test_plain_writes_records_as_json_values() -> None:
    sig = Significance({"f1_macro": Interval.of(-0.01, -0.02, 0.0)})
    assert plain(sig)["deltas"]["f1_macro"] == {"delta": -0.01, "low": -0.02, "high": 0.0, "significant": False}
    assert plain(Capability(log_loss=float("inf"), ece=0.1)) == {"log_loss": None, "ece": 0.1, "brier": None,
                                                                "reliability": []}
