"""`optikit bench` measures an OpenVINO variant beside its torch teacher: one ok row with every section filled."""
from __future__ import annotations

import json

import pytest

from optikit.cli import main

pytest.importorskip("openvino")


def test_bench_measures_an_openvino_variant_end_to_end(digits_teacher, tmp_path, capsys):
    from optikit.api import compress_chain

    (ov,) = compress_chain(digits_teacher, ["export-openvino"], out=tmp_path / "v")
    report = tmp_path / "report"
    try:
        main(["bench", str(digits_teacher.path), str(ov.path), "--out", str(report), "--min-seconds", "0.02",
              "--min-iterations", "5", "--speedup-rounds", "4", "--resamples", "100", "--batch-size", "1",
              "--batch-size", "8"])
    except SystemExit as exc:
        assert exc.code in (0, None), capsys.readouterr()
    rows = json.loads((report / "results.json").read_text())["variants"]
    assert [r["status"] for r in rows] == ["ok", "ok"], [r.get("error") for r in rows]
    row = rows[1]
    assert row["format"] == "openvino"
    assert row["runner"]["backend"] == "openvino"
    assert {lat["batch_size"] for lat in row["latency"]} == {1, 8}
    assert row["fidelity"]["agreement"] == 1.0  # fp32: the same predictions as the teacher
    assert row["size"]["parameters"] == rows[0]["size"]["parameters"]
    assert set(row["size"]["files"]) == {"model.xml", "model.bin"}
