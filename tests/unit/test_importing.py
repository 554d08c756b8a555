"""Specification of importing the user's own model: detected from disk, labels from the model, their files untouched."""
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from optikit.data import load_dataset
from optikit.errors import ConfigError, DataError, ModelLoadError
from optikit.importing import DataOptions, detect, import_model

# Deliberately not sorted: the model's output order is the label space, whatever order the data's names sort in.
UNSORTED = ("vision", "ops", "language")


def tree_digest(root: Path) -> dict[str, tuple[str, int]]:
    """Every file's hash and modification time: what 'the user's files untouched' means."""
    return {p.relative_to(root).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def save_classifier(source: Path, target: Path, names: tuple[str, ...] | None) -> Path:
    """The tiny BERT checkpoint re-saved as a user would: with their label names (or generic ones) in their order."""
    from transformers import AutoTokenizer, BertForSequenceClassification

    extra = {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}} if names else {}
    model = BertForSequenceClassification.from_pretrained(str(source), num_labels=len(names or UNSORTED), **extra)
    model.save_pretrained(str(target), safe_serialization=True)
    AutoTokenizer.from_pretrained(str(source)).save_pretrained(str(target))
    return target


@pytest.fixture(scope="module")
def user_model(tiny_bert_checkpoint, tmp_path_factory) -> Path:
    return save_classifier(tiny_bert_checkpoint, tmp_path_factory.mktemp("user") / "my-classifier", UNSORTED)


@pytest.fixture(scope="module")
def split_files(text_csv, tmp_path_factory) -> tuple[Path, Path]:
    frame = pd.read_csv(text_csv)
    folder = tmp_path_factory.mktemp("user-data")
    train, test = folder / "train.csv", folder / "test.csv"
    frame.iloc[:60].to_csv(train, index=False)
    frame.iloc[60:].to_csv(test, index=False)
    return train, test


def options(data, **kw) -> DataOptions:
    return DataOptions(data=str(data), text_cols=("title", "description"), label_col="tag", **kw)


def test_what_is_on_disk_decides_the_kind(user_model, tmp_path, digits_teacher):
    assert detect(user_model).kind == "hf"
    assert detect(digits_teacher.path).kind == "variant"
    (tmp_path / "m.onnx").write_bytes(b"")
    assert detect(tmp_path / "m.onnx").kind == "onnx" and detect(tmp_path).onnx_file == tmp_path / "m.onnx"
    (tmp_path / "other.onnx").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="several ONNX files .*m.onnx, other.onnx"):
        detect(tmp_path)


@pytest.mark.parametrize("layout, message", [
    ({"config.json": "{}", "pytorch_model.bin": ""}, r"only pickled weights.*safe_serialization=True"),
    ({"notes.txt": "hi"}, r"holds no model optikit can read"),
])
def test_folders_it_cannot_read_are_refused_in_one_line(tmp_path, layout, message):
    for name, text in layout.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ModelLoadError, match=message):
        detect(tmp_path)


def test_a_missing_model_names_every_accepted_kind(tmp_path):
    with pytest.raises(ModelLoadError, match=r"does not exist: pass a Hugging Face save_pretrained folder, an .onnx"):
        detect(tmp_path / "nope")


def test_labels_come_from_the_model_in_its_order(user_model, text_csv):
    variant = import_model(user_model, options(text_csv))
    assert variant.task.label_names == UNSORTED and variant.format == "hf"
    data = load_dataset(variant.data, variant.task.label_names)
    tags = pd.read_csv(text_csv)["tag"]
    assert [UNSORTED[i] for i in data.labels] == tags.tolist()


def test_import_copies_and_never_touches_the_users_files(user_model, text_csv, optikit_home):
    before = tree_digest(user_model)
    config_text = (user_model / "config.json").read_text()
    variant = import_model(user_model, options(text_csv))
    assert tree_digest(user_model) == before and (user_model / "config.json").read_text() == config_text
    assert variant.path.parent == optikit_home / "imports"
    assert (variant.path / "model.safetensors").read_bytes() == (user_model / "model.safetensors").read_bytes()
    assert variant.report["source"] == "import" and variant.splits.rule == "seeded"


def test_import_is_content_addressed(user_model, text_csv, split_files, tmp_path):
    first = import_model(user_model, options(text_csv))
    assert import_model(user_model, options(text_csv)).id == first.id
    moved = shutil.copytree(user_model, tmp_path / "elsewhere")
    assert import_model(moved, options(text_csv)).id == first.id  # the bytes name it, not the folder
    assert import_model(user_model, options(split_files[0], test_data=str(split_files[1]))).id != first.id


def test_a_data_label_the_model_does_not_know_names_both_lists(user_model, tmp_path, text_csv):
    frame = pd.read_csv(text_csv)
    frame.loc[0, "tag"] = "audio"
    frame.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match=r"label\(s\) \['audio'\] that the model does not know: the model's labels are "
                                        r"\['vision', 'ops', 'language'\], the data's are \['audio', 'language'"):
        import_model(user_model, options(tmp_path / "bad.csv"))


def test_a_model_label_absent_from_the_data_is_a_warning(user_model, tmp_path, text_csv, capsys):
    frame = pd.read_csv(text_csv)
    frame[frame.tag != "ops"].to_csv(tmp_path / "no-ops.csv", index=False)
    variant = import_model(user_model, options(tmp_path / "no-ops.csv"))
    assert variant.task.label_names == UNSORTED
    assert "model label(s) ['ops'] never appear in no-ops.csv" in capsys.readouterr().err


def test_generic_label_names_need_labels_from_the_user(tiny_bert_checkpoint, tmp_path, text_csv):
    generic = save_classifier(tiny_bert_checkpoint, tmp_path / "generic", None)
    with pytest.raises(ConfigError, match=r"has no label names \(3 outputs\): pass them in output order with --labels"):
        import_model(generic, options(text_csv))
    with pytest.raises(ConfigError, match="--labels names 2 labels but .* has 3 outputs"):
        import_model(generic, options(text_csv, labels=("ops", "vision")))
    variant = import_model(generic, options(text_csv, labels=("ops", "language", "vision")))
    assert variant.task.label_names == ("ops", "language", "vision")


def test_labels_that_contradict_the_models_config_are_refused(user_model, text_csv):
    with pytest.raises(ConfigError, match=r"--labels \['ops', 'vision', 'language'\] differ from .*id2label"):
        import_model(user_model, options(text_csv, labels=("ops", "vision", "language")))


def test_the_users_test_file_is_the_test_split_and_calibration_never_reads_it(user_model, split_files):
    train, test = split_files
    variant = import_model(user_model, options(train, test_data=str(test)))
    data = load_dataset(variant.data, variant.task.label_names)
    s = variant.splits
    assert s.rule == "test-file" and variant.data.split_rule == "test-file"
    expected = pd.read_csv(test)
    assert [data.inputs[i] for i in s.test] == (expected.title + " " + expected.description).tolist()
    n_train_rows = len(pd.read_csv(train))
    assert max(s.train + s.validation + s.calibration) < n_train_rows <= min(s.test)
    assert set(s.calibration) <= set(s.train)


def test_a_split_column_decides_the_splits(user_model, text_csv, tmp_path):
    frame = pd.read_csv(text_csv)
    frame["split"] = np.where(np.arange(len(frame)) % 5 == 0, "test", np.where(np.arange(len(frame)) % 5 == 1, "val",
                                                                              "train"))
    frame.to_csv(tmp_path / "with-split.csv", index=False)
    variant = import_model(user_model, options(tmp_path / "with-split.csv", split_col="split"))
    assert variant.splits.rule == "split-col"
    assert list(variant.splits.test) == list(range(0, len(frame), 5))
    assert list(variant.splits.validation) == list(range(1, len(frame), 5))
    assert not set(variant.splits.calibration) & set(variant.splits.test)
    frame.loc[3, "split"] = "holdout"
    frame.to_csv(tmp_path / "bad-split.csv", index=False)
    with pytest.raises(DataError, match=r"column 'split' holds \['holdout'\]: a split column may hold train"):
        import_model(user_model, options(tmp_path / "bad-split.csv", split_col="split"))


def test_texts_shared_by_train_and_test_files_are_counted(user_model, split_files, tmp_path):
    train, test = split_files
    frame = pd.read_csv(test)
    pd.concat([pd.read_csv(train), frame.iloc[:4]]).to_csv(tmp_path / "leaky-train.csv", index=False)
    variant = import_model(user_model, options(tmp_path / "leaky-train.csv", test_data=str(test)))
    notes = load_dataset(variant.data, variant.task.label_names).notes
    assert any(n.startswith("4 test example(s) also appear in the rest of the data") for n in notes)


def test_the_manifest_records_the_split_rule_and_the_data_hashes(user_model, split_files):
    train, test = split_files
    variant = import_model(user_model, options(train, test_data=str(test)))
    manifest = json.loads((variant.path / "variant.json").read_text())
    assert manifest["splits"]["rule"] == "test-file" and manifest["data"]["split_rule"] == "test-file"
    assert manifest["data"]["test_sha256"] == hashlib.sha256(test.read_bytes()).hexdigest()


def test_import_needs_data(user_model):
    with pytest.raises(ConfigError, match="needs the data to measure it on: pass --data FILE"):
        import_model(user_model, DataOptions())


def test_test_data_and_split_col_together_are_refused():
    with pytest.raises(ConfigError, match="--test-data and --split-col both name the test set"):
        DataOptions(data="x.csv", test_data="t.csv", split_col="split")


def test_a_table_of_image_paths_reads_like_the_image_folder(tmp_path):
    from tests.image_helpers import SHAPES, save_tiny_resnet, write_shapes_folder

    model = save_tiny_resnet(tmp_path / "resnet")
    folder = write_shapes_folder(tmp_path / "shapes", per_class=8)
    rows = sorted((p.relative_to(tmp_path).as_posix(), p.parent.name) for p in folder.rglob("*.png"))
    pd.DataFrame(rows, columns=["file", "shape"]).to_csv(tmp_path / "images.csv", index=False)
    from_table = import_model(model, DataOptions(data=str(tmp_path / "images.csv"), image_col="file", label_col="shape"))
    from_folder = import_model(model, DataOptions(data=str(folder)))
    a = load_dataset(from_table.data, from_table.task.label_names)
    b = load_dataset(from_folder.data, from_folder.task.label_names)
    assert from_table.task.kind == "image" and from_table.task.label_names == SHAPES
    assert a.inputs.shape == (24, 3, 32, 32) and np.array_equal(a.inputs, b.inputs)
    assert a.labels.tolist() == b.labels.tolist()


def test_benching_a_model_optikit_did_not_train_on_its_own_split_says_it_may_overlap(user_model, text_csv, tmp_path):
    from optikit.api import bench, compress

    int8 = compress(user_model, ["quantize"], data=text_csv, text_cols=["title", "description"], label_col="tag",
                    out=tmp_path / "v")
    assert int8.origin == "import"  # kept by every pass
    results = bench([int8], batch_sizes=(1,), min_iterations=3, min_seconds=0.02, speedup_rounds=4, resamples=200,
                    suite="none")
    assert any("may overlap its training data; pass --test-data FILE or --split-col COL" in n
               for n in results.task.notes)
