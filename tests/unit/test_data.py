"""Specification of data loading and the deterministic stratified splits every measurement shares."""
import numpy as np
import pandas as pd
import pytest

from optikit.data import DataSpec, load_dataset, load_digits, load_table, make_splits
from optikit.errors import DataError


def test_digits_are_the_real_bundled_scans():
    data = load_digits()
    assert data.kind == "image" and len(data) == 1797
    assert data.inputs.shape == (1797, 1, 8, 8) and data.inputs.dtype == np.float32
    assert 0.0 <= data.inputs.min() and data.inputs.max() <= 1.0
    assert data.label_names == tuple(str(i) for i in range(10))


def test_splits_are_deterministic_disjoint_and_stratified():
    labels = load_digits().labels
    a, b = make_splits(labels, seed=0), make_splits(labels, seed=0)
    assert a == b
    train, val, test = set(a.train), set(a.validation), set(a.test)
    assert not (train & val) and not (train & test) and not (val & test)
    assert len(train | val | test) == len(labels)
    assert set(a.calibration) <= train
    share = np.bincount(labels[list(test)], minlength=10) / len(test)
    assert np.allclose(share, np.bincount(labels, minlength=10) / len(labels), atol=0.02)


def test_another_seed_gives_another_split():
    labels = load_digits().labels
    assert make_splits(labels, 0).test != make_splits(labels, 1).test


def test_table_joins_text_columns_and_names_labels(text_csv):
    data = load_table(text_csv, ("title", "description"), "tag")
    frame = pd.read_csv(text_csv)
    assert data.kind == "text" and len(data) == len(frame)
    assert data.inputs[0] == f"{frame.title[0]} {frame.description[0]}"
    assert data.label_names == ("language", "ops", "vision")
    assert data.spec.sha256 and data.spec.text_cols == ("title", "description")


def test_table_missing_column_names_the_columns_it_has(text_csv):
    with pytest.raises(DataError, match=r"has no column 'body'.*its columns are id, title, description, tag"):
        load_table(text_csv, ("title", "body"), "tag")


def test_single_class_table_is_rejected(tmp_path):
    path = tmp_path / "one.csv"
    pd.DataFrame({"text": ["a", "b", "c"], "tag": ["x", "x", "x"]}).to_csv(path, index=False)
    with pytest.raises(DataError, match="single class"):
        load_table(path, ("text",), "tag")


def test_empty_table_is_rejected(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("text,tag\n")
    with pytest.raises(DataError, match="no labelled rows"):
        load_table(path, ("text",), "tag")


def test_unreadable_table_is_rejected(tmp_path):
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="cannot read"):
        load_table(path, ("text",), "tag")


def test_a_class_too_small_to_split_is_rejected():
    with pytest.raises(DataError, match="only 2 examples"):
        make_splits(np.array([0] * 20 + [1] * 2), seed=0)


def test_changed_file_is_detected(text_csv, tmp_path):
    spec = load_table(text_csv, ("title", "description"), "tag").spec
    changed = DataSpec(spec.source, spec.path, spec.text_cols, spec.label_col, "0" * 64)
    with pytest.raises(DataError, match="has sha256 .*but the variant was made with 0000"):
        load_dataset(changed)
