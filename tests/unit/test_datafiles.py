"""Specification of reading the user's data: every table format gives the same examples, hashed by content."""
import json
from pathlib import Path

import pandas as pd
import pytest

from optikit.data import load_data
from optikit.datafiles import DATASET_DICT_SPLIT, detect_source
from optikit.errors import DataError

COLS = {"text_cols": ("title", "description"), "label_col": "tag"}


def save_arrow_dataset(frame: pd.DataFrame, folder: Path) -> Path:
    """The layout `datasets.Dataset.save_to_disk` writes: Arrow stream files listed in state.json."""
    import pyarrow as pa

    folder.mkdir(parents=True)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    with pa.OSFile(str(folder / "data-00000-of-00001.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))
    (folder / "dataset_info.json").write_text("{}")
    return folder


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet", ".jsonl", "save_to_disk"])
def test_every_table_format_reads_the_same_examples(text_csv, tmp_path, suffix):
    frame = pd.read_csv(text_csv)
    path = tmp_path / f"data{suffix}"
    if suffix == ".tsv":
        frame.to_csv(path, sep="\t", index=False)
    elif suffix == ".parquet":
        frame.to_parquet(path)
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    elif suffix == "save_to_disk":
        save_arrow_dataset(frame, path)
    else:
        path = text_csv
    expected = load_data(text_csv, **COLS)
    data = load_data(path, **COLS)
    assert data.inputs == expected.inputs and data.labels.tolist() == expected.labels.tolist()
    assert data.spec.source == detect_source(path) and len(data.spec.sha256 or "") == 64


def test_a_saved_dataset_dict_brings_its_own_splits(text_csv, tmp_path):
    frame = pd.read_csv(text_csv)
    root = tmp_path / "dd"
    save_arrow_dataset(frame.iloc[:70], root / "train")
    save_arrow_dataset(frame.iloc[70:], root / "test")
    (root / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    data = load_data(root, **COLS)
    assert data.spec.split_col == DATASET_DICT_SPLIT and data.spec.split_rule == "split-col"
    assert (data.parts == "test").sum() == len(frame) - 70


def test_an_unknown_suffix_names_the_formats_it_reads(tmp_path):
    (tmp_path / "data.xlsx").write_bytes(b"x")
    with pytest.raises(DataError, match=r"cannot tell the format of data.xlsx .*pass a CSV, TSV, Parquet or JSON Lines"):
        load_data(tmp_path / "data.xlsx", **COLS)


def test_rows_without_a_label_or_text_are_counted_not_silently_dropped(text_csv, tmp_path):
    frame = pd.read_csv(text_csv)
    frame.loc[[0, 1], "tag"] = None
    frame.loc[2, ["title", "description"]] = None
    frame.to_csv(tmp_path / "holes.csv", index=False)
    data = load_data(tmp_path / "holes.csv", **COLS)
    assert len(data) == len(frame) - 3
    assert "2 row(s) of holes.csv without a label in 'tag' were left out" in data.notes
    assert "1 row(s) of holes.csv with empty text in title, description were left out" in data.notes


def test_integer_class_ids_index_the_models_labels(text_csv, tmp_path):
    frame = pd.read_csv(text_csv)
    names = ("vision", "ops", "language")
    frame["tag"] = frame["tag"].map({n: i for i, n in enumerate(names)})
    frame.to_csv(tmp_path / "ids.csv", index=False)
    data = load_data(tmp_path / "ids.csv", label_names=names, **COLS)
    assert data.labels.tolist() == frame["tag"].tolist()
    frame.loc[0, "tag"] = 7
    frame.to_csv(tmp_path / "bad-ids.csv", index=False)
    with pytest.raises(DataError, match=r"holds label ids 0..7 but the model has 3 labels"):
        load_data(tmp_path / "bad-ids.csv", label_names=names, **COLS)
