"""Specification of optikit's JSON files: strict JSON only, so any parser reads them (issue 12)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from optikit._io import write_json_atomic


def strict_loads(text: str):
    """json.loads that rejects NaN, Infinity and -Infinity, as JSON.parse, Go, Rust and jq do."""
    def refuse(constant: str):
        raise ValueError(f"not JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


def test_finite_data_round_trips_through_a_strict_parser(tmp_path: Path):
    data = {"variants": [{"latency": np.float32(1.5), "counts": np.arange(3), "path": tmp_path}], "ok": None}
    write_json_atomic(tmp_path / "results.json", data)
    assert strict_loads((tmp_path / "results.json").read_text()) == {
        "variants": [{"latency": 1.5, "counts": [0, 1, 2], "path": str(tmp_path)}], "ok": None}


@pytest.mark.parametrize(("value", "shown"), [(float("nan"), "nan"), (float("inf"), "inf"), (-float("inf"), "-inf"),
                                              (np.float64("nan"), "nan")])
def test_a_value_that_is_not_finite_is_refused_naming_its_key_path(tmp_path: Path, value, shown):
    data = {"variants": [{}, {}, {"capability": {"log_loss": 0.3, "ece": value}}]}
    with pytest.raises(ValueError, match=rf"refusing to write {shown} at results\.variants\[2\]\.capability\.ece "
                                         r"into .*results\.json"):
        write_json_atomic(tmp_path / "results.json", data)
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary file left


def test_a_numpy_value_that_is_not_finite_is_found_inside_an_array(tmp_path: Path):
    data = {"report": {"history": [{"epoch": 1, "losses": np.array([0.5, np.float32("inf")], dtype=np.float32)}]}}
    with pytest.raises(ValueError, match=r"inf at variant\.report\.history\[0\]\.losses\[1\]"):
        write_json_atomic(tmp_path / "variant.json", data)


def test_a_refused_write_leaves_the_previous_file_as_it_was(tmp_path: Path):
    target = tmp_path / "results.json"
    write_json_atomic(target, {"accuracy": 0.9})
    with pytest.raises(ValueError, match=r"results\.accuracy"):
        write_json_atomic(target, {"accuracy": float("nan")})
    assert strict_loads(target.read_text()) == {"accuracy": 0.9}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
