"""Bring your own model, tried as a new user would: the CLI takes their folder and their data, refuses what it
cannot do in one line, never touches their files, and a variant moves between folders with its data."""
import hashlib
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from optikit.data import Dataset
from tests.integration.test_cli import assert_one_line_error, run_cli, run_ok
from tests.unit.test_importing import UNSORTED, save_classifier, tree_digest

COLS = ["--text-cols", "title,description", "--label-col", "tag"]
QUICK_BENCH = ["--min-seconds", "0.05", "--min-iterations", "5", "--batch-size", "1", "--speedup-rounds", "4",
               "--resamples", "200", "--suite", "none"]


@pytest.fixture(scope="module")
def user_model(tiny_bert_checkpoint, tmp_path_factory) -> Path:
    return save_classifier(tiny_bert_checkpoint, tmp_path_factory.mktemp("user") / "my-classifier", UNSORTED)


@pytest.fixture(scope="module")
def onnx_export(user_model, tmp_path_factory) -> Path:
    """What `optimum-cli export onnx --model DIR --task text-classification OUT` writes (the same function)."""
    from optimum.exporters.onnx import main_export

    out = tmp_path_factory.mktemp("user") / "my-classifier-onnx"
    main_export(str(user_model), output=str(out), task="text-classification", do_validation=False)
    return out


@pytest.fixture
def user_data(text_csv, tmp_path) -> tuple[Path, Path]:
    frame = pd.read_csv(text_csv)
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    frame.iloc[:60].to_csv(train, index=False)
    frame.iloc[60:].to_csv(test, index=False)
    return train, test


def imports_written(home: Path) -> list[str]:
    folder = home / "imports"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_import_prints_the_variant_and_leaves_the_users_folder_as_it_was(user_model, user_data, capsys):
    before = tree_digest(user_model)
    out = run_ok(["import", str(user_model), "--data", str(user_data[0]), "--test-data", str(user_data[1]), *COLS],
                 capsys).out
    assert "3 labels: vision, ops, language" in out and "split by test-file" in out
    variant_path = Path(out.strip().splitlines()[-1])
    assert (variant_path / "variant.json").is_file()
    assert tree_digest(user_model) == before


def test_the_users_onnx_export_is_quantized_and_benched(onnx_export, user_data, tmp_path, capsys):
    train, test = user_data
    before = tree_digest(onnx_export)
    out = run_ok(["compress", str(onnx_export), "--data", str(train), "--test-data", str(test), *COLS,
                  "--pass", "quantize", "--out", str(tmp_path / "v")], capsys).out
    int8 = Path(out.strip().splitlines()[-1].strip())
    run_ok(["bench", str(onnx_export), str(int8), "--test-data", str(test), "--out", str(tmp_path / "r"), *QUICK_BENCH],
           capsys)
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert [v["format"] for v in results["variants"]] == ["onnx", "onnx"]
    assert results["task"]["examples"] == len(pd.read_csv(test))
    assert results["task"]["label_names"] == list(UNSORTED)
    assert results["variants"][1]["fidelity"]["agreement"] > 0.5
    assert tree_digest(onnx_export) == before


@pytest.mark.parametrize("case", ["bin-only", "prune-onnx", "unknown-label", "no-label-names", "onnx-no-tokenizer",
                                  "no-data"])
def test_every_refusal_is_one_line_exit_2_and_writes_nothing(case, user_model, onnx_export, user_data,
                                                             tiny_bert_checkpoint, tmp_path, optikit_home, capsys):
    train, _ = user_data
    model = user_model
    args = ["--pass", "quantize"]
    if case == "bin-only":
        model = tmp_path / "bin-only"
        model.mkdir()
        (model / "config.json").write_text((user_model / "config.json").read_text())
        (model / "pytorch_model.bin").write_bytes(b"not unpickled")
        pattern = r"only pickled weights \(\*\.bin\), which optikit never loads: convert them"
    elif case == "prune-onnx":
        model, args = onnx_export, ["--pass", "prune-structured"]
        pattern = r"prune-structured cannot take a onnx model: it needs torch weights.*can be quantized and benched"
    elif case == "unknown-label":
        frame = pd.read_csv(train)
        frame.loc[0, "tag"] = "audio"
        train = tmp_path / "bad.csv"
        frame.to_csv(train, index=False)
        pattern = r"label\(s\) \['audio'\] that the model does not know: the model's labels are"
    elif case == "no-label-names":
        model = save_classifier(tiny_bert_checkpoint, tmp_path / "generic", None)
        pattern = r"has no label names \(3 outputs\): pass them in output order with --labels a,b,c"
    elif case == "onnx-no-tokenizer":
        model = tmp_path / "bare"
        model.mkdir()
        shutil.copy(onnx_export / "model.onnx", model / "model.onnx")
        shutil.copy(onnx_export / "config.json", model / "config.json")
        pattern = r"is a text model but .* holds no tokenizer: put its tokenizer files"
    else:
        train = None
        pattern = r"needs the data to measure it on: pass --data FILE"
    before, written = tree_digest(model), imports_written(optikit_home)
    data = ["--data", str(train), *COLS] if train else []
    code, _, err = run_cli(["compress", str(model), *data, *args, "--out", str(tmp_path / "out")], capsys)
    assert_one_line_error(code, err, pattern)
    assert tree_digest(model) == before
    assert imports_written(optikit_home) == written and not (tmp_path / "out").exists()


def int8_beside_its_data(model: Path, text_csv: Path, project: Path, capsys) -> Path:
    """A project folder holding a copy of the data and, under variants/, the int8 variant made from it."""
    project.mkdir()
    shutil.copy(text_csv, project / "data.csv")
    out = run_ok(["compress", str(model), "--data", str(project / "data.csv"), *COLS, "--pass", "quantize",
                  "--out", str(project / "variants")], capsys).out
    return Path(out.strip().splitlines()[-1].strip())


def test_a_moved_variant_benches_with_its_data_and_refuses_the_wrong_file(user_model, text_csv, tmp_path, capsys):
    home = tmp_path / "a"
    int8 = int8_beside_its_data(user_model, text_csv, home, capsys)
    moved, data = tmp_path / "b" / "int8", tmp_path / "c" / "data.csv"
    moved.parent.mkdir()
    data.parent.mkdir()
    shutil.move(int8, moved)
    shutil.move(home / "data.csv", data)
    code, _, err = run_cli(["bench", str(moved), "--out", str(tmp_path / "r0"), *QUICK_BENCH], capsys)
    assert_one_line_error(code, err, r"data .*data.csv does not exist \(moved\?\): pass --data")
    run_ok(["bench", str(moved), "--data", str(data), "--out", str(tmp_path / "r1"), *QUICK_BENCH], capsys)
    assert json.loads((tmp_path / "r1" / "results.json").read_text())["variants"][0]["status"] == "ok"
    wrong = tmp_path / "c" / "other.csv"
    pd.read_csv(data).iloc[:-1].to_csv(wrong, index=False)
    code, _, err = run_cli(["bench", str(moved), "--data", str(wrong), "--out", str(tmp_path / "r2"), *QUICK_BENCH],
                           capsys)
    found = hashlib.sha256(wrong.read_bytes()).hexdigest()
    expected = hashlib.sha256(data.read_bytes()).hexdigest()
    assert_one_line_error(code, err, rf"other.csv has sha256 {found}, but the variant was made with {expected}")


def test_a_variant_tree_copied_with_its_data_benches_where_it_lands(user_model, text_csv, tmp_path, capsys):
    project = tmp_path / "project"
    int8 = int8_beside_its_data(user_model, text_csv, project, capsys)
    assert json.loads((int8 / "variant.json").read_text())["data"]["path"] == "../../data.csv"
    copied = shutil.copytree(project, tmp_path / "elsewhere" / "project")
    shutil.rmtree(project)
    run_ok(["bench", str(copied / "variants" / int8.name), "--out", str(tmp_path / "r"), *QUICK_BENCH], capsys)


def test_outputs_follow_the_users_umask(user_model, text_csv, tmp_path, capsys):
    old = os.umask(0o022)
    try:
        out = run_ok(["import", str(user_model), "--data", str(text_csv), *COLS, "--labels", ",".join(UNSORTED)],
                     capsys).out
    finally:
        os.umask(old)
    variant = Path(out.strip().splitlines()[-1])
    assert variant.stat().st_mode & 0o777 == 0o755
    assert (variant / "variant.json").stat().st_mode & 0o777 == 0o644


def test_static_calibration_never_reads_the_test_set(user_model, user_data, tmp_path, monkeypatch):
    from optikit import api

    train, test = user_data
    taken: list[set[int]] = []
    original = Dataset.take

    def spy(self, indices):
        taken.append({int(i) for i in indices})
        return original(self, indices)

    monkeypatch.setattr(Dataset, "take", spy)
    produced = api.compress_chain(user_model, ["quantize:mode=static"], data=train, test_data=test,
                                  text_cols=["title", "description"], label_col="tag", out=tmp_path / "v")
    test_rows = set(produced[-1].splits.test)
    assert taken and test_rows and all(not (t & test_rows) for t in taken)
    assert produced[-1].lineage[-1].config["mode"] == "static"


def test_the_api_takes_an_inference_session_for_its_file(onnx_export, user_data):
    import onnxruntime as ort

    import optikit

    session = ort.InferenceSession(str(onnx_export / "model.onnx"), providers=["CPUExecutionProvider"])
    variant = optikit.import_model(session, data=user_data[0], test_data=user_data[1],
                                   text_cols=["title", "description"], label_col="tag")
    assert variant.format == "onnx" and variant.task.label_names == UNSORTED
    assert (variant.path / "model.onnx").read_bytes() == (onnx_export / "model.onnx").read_bytes()
    with pytest.raises(Exception, match="passes must be a list of pass specs"):
        optikit.compress(variant, "quantize")


def test_a_hub_cache_snapshot_is_found_offline(user_model, text_csv, tmp_path, monkeypatch):
    """The layout huggingface_hub writes: models--org--name/{refs/main, snapshots/<commit>/…}; never a download."""
    import huggingface_hub.constants

    from optikit.importing import detect

    repo = tmp_path / "hub" / "models--acme--tagger"
    snapshot = repo / "snapshots" / "0123abc"
    shutil.copytree(user_model, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abc")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert detect("acme/tagger").path == snapshot
    assert detect(repo).path == snapshot
    from optikit.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="model acme/absent does not exist"):
        detect("acme/absent")


def test_a_matrix_names_the_users_model_and_data(user_model, user_data, tmp_path):
    from tests.integration.conftest import run_cli as run_cli_code

    train, test = user_data
    matrix = tmp_path / "mine.toml"
    shutil.copytree(user_model, tmp_path / "model")
    matrix.write_text(f'''
name = "mine"
batch_sizes = [1]
threads = 1
[[teachers]]
model = "model"
data = "{train.name}"
test_data = "{test.name}"
text_cols = ["title", "description"]
label_col = "tag"
[latency]
min_iterations = 5
min_seconds = 0.05
warmup_max = 10
[variants]
int8 = ["quantize"]
''')
    assert run_cli_code("bench", str(matrix), "--out", str(tmp_path / "out")) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [v["status"] for v in results["variants"]] == ["ok", "ok"]
    assert results["task"]["examples"] == len(pd.read_csv(test)) and results["task"]["label_names"] == list(UNSORTED)
