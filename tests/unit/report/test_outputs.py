"""The files a run writes: results-long.csv beside results.csv; teacher and device columns for a matrix group, and one
combined CSV of each kind over several groups."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from optikit.report.outputs import write_combined, write_outputs
from tests.unit.report.fake import fake_results


def _group(teacher: str, device: str = "cpu"):
    res = fake_results()
    res.settings["matrix"]["group"] = f"{teacher}@{device}"
    return res


def test_a_single_run_writes_the_long_csv_and_no_group_columns(tmp_path: Path) -> None:
    paths = write_outputs(fake_results(), tmp_path)
    assert paths["long_csv"] == tmp_path / "results-long.csv"
    wide, long = pd.read_csv(paths["csv"]), pd.read_csv(paths["long_csv"])
    assert "teacher" not in wide.columns and "teacher" not in long.columns
    assert list(wide["variant"]) == ["baseline", "int8", "broken"]
    assert set(long["variant"]) == {"baseline", "int8"} and long.columns[0] == "variant"


def test_a_matrix_groups_csvs_start_with_its_teacher_and_device(tmp_path: Path) -> None:
    paths = write_outputs(_group("digits-cnn", "cuda"), tmp_path)
    for key in ("csv", "long_csv"):
        frame = pd.read_csv(paths[key])
        assert list(frame.columns[:2]) == ["teacher", "device"]
        assert set(frame["teacher"]) == {"digits-cnn"} and set(frame["device"]) == {"cuda"}


def test_several_groups_combine_into_one_csv_of_each_kind(tmp_path: Path) -> None:
    groups = {"digits-cnn@cpu": _group("digits-cnn"), "minilm-tags@cpu": _group("minilm-tags")}
    paths = write_combined(groups, tmp_path)
    wide = pd.read_csv(paths["csv"])
    assert paths["csv"] == tmp_path / "results.csv" and len(wide) == 6
    assert list(zip(wide["teacher"], wide["variant"], strict=True))[2:4] == [("digits-cnn", "broken"),
                                                                          ("minilm-tags", "baseline")]
    long = pd.read_csv(paths["long_csv"])
    one = long[long["teacher"] == "minilm-tags"].drop(columns=["teacher", "device"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(one, pd.read_csv(write_outputs(fake_results(), tmp_path / "one")["long_csv"]))
