"""The Trainer callback measures the Trainer's own evaluation rows, names the teacher after the model, and nests
its MLflow run under the Trainer's (a real 1-step Trainer run each, tiny BERT, 1 thread)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("accelerate")

FAST_BENCH = {"batch_sizes": (1,), "min_seconds": 0.05, "min_iterations": 3, "speedup_rounds": 4, "resamples": 100,
              "suite": "none"}
TEXT = {"text_cols": ["title", "description"], "label_col": "tag"}
ORDER = ("vision", "language", "ops")  # the model's id2label, deliberately not sorted


class Rows:
    """Stands in for a `datasets.Dataset`: token ids for the Trainer, the raw columns (and `to_pandas`) beside."""

    def __init__(self, frame: pd.DataFrame, tokenizer) -> None:
        self.frame = frame.reset_index(drop=True)
        texts = (self.frame["title"] + " " + self.frame["description"]).tolist()
        self.encoded = tokenizer(texts, truncation=True, max_length=32, padding="max_length")

    @property
    def column_names(self) -> list[str]:
        return [*self.frame.columns, "input_ids", "attention_mask"]

    def to_pandas(self) -> pd.DataFrame:
        return self.frame.assign(input_ids=self.encoded["input_ids"], attention_mask=self.encoded["attention_mask"])

    def __len__(self) -> int:
        return len(self.frame)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.encoded["input_ids"][i], "attention_mask": self.encoded["attention_mask"][i],
                "labels": int(self.frame["labels"][i])}


def _trainer(checkpoint: Path, text_csv: Path, out: Path, eval_rows: pd.DataFrame | None = None,
             report_to: list[str] | None = None):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments

    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(str(checkpoint))
    model = AutoModelForSequenceClassification.from_pretrained(
        str(checkpoint), id2label=dict(enumerate(ORDER)), label2id={n: i for i, n in enumerate(ORDER)})
    frame = pd.read_csv(text_csv).assign(labels=lambda f: f["tag"].map({n: i for i, n in enumerate(ORDER)}))
    args = TrainingArguments(output_dir=str(out), max_steps=1, per_device_train_batch_size=8, report_to=report_to or [],
                             use_cpu=True, save_strategy="no", logging_strategy="no", dataloader_num_workers=0,
                             disable_tqdm=True)
    return Trainer(model=model, args=args, train_dataset=Rows(frame.iloc[:16], tok), processing_class=tok,
                   eval_dataset=Rows(eval_rows, tok) if eval_rows is not None else None)


def _callback(**kw):
    from optikit.integrations import OptikitCallback

    return OptikitCallback({"sparse": ["prune-unstructured:amount=0.3"]}, max_length=32, threads=1,
                           bench_options=FAST_BENCH, **kw)


def test_callback_measures_exactly_the_trainers_eval_rows(tiny_bert_checkpoint: Path, text_csv: Path,
                                                          tmp_path: Path) -> None:
    source = pd.read_csv(text_csv)
    eval_rows = source.iloc[60:].assign(labels=lambda f: f["tag"].map({n: i for i, n in enumerate(ORDER)}))
    trainer = _trainer(tiny_bert_checkpoint, text_csv, tmp_path / "run", eval_rows[["title", "description", "labels"]])
    callback = _callback(data=text_csv, **TEXT).attach(trainer)
    trainer.train()

    outcome = callback.outcome
    assert outcome is not None
    task = outcome.results.task
    assert task.examples == len(eval_rows) == 30 and task.split_rule == "test-file"
    assert task.label_names == tuple(ORDER)
    written = Path(outcome.teacher.data.test_path or "")
    assert written.parent == tmp_path / "run" / "optikit" and written.name.startswith("eval-")
    # The Trainer's class ids went back to the names the data uses, through the model's id2label.
    assert pd.read_csv(written)["tag"].tolist() == eval_rows["tag"].tolist()
    # data= holds those rows too: load_data counts the shared texts, and the report says so.
    assert any(n.startswith("30 test example(s) also appear in the rest of the data") for n in task.notes)
    assert not any("seeded split" in n for n in task.notes)
    assert outcome.teacher.name == tiny_bert_checkpoint.name  # the model's name, not output_dir's ("run")


def test_callback_nests_its_mlflow_run_under_the_trainers_and_notes_the_seeded_split(
        tiny_bert_checkpoint: Path, text_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlflow")
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)  # nothing may land in the working directory (./mlruns)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "trainer")
    client = MlflowClient(uri)
    experiment = client.create_experiment("trainer", artifact_location=(tmp_path / "artifacts").as_uri())

    trainer = _trainer(tiny_bert_checkpoint, text_csv, tmp_path / "run", report_to=["mlflow"])
    callback = _callback(data=text_csv, **TEXT).attach(trainer)
    trainer.train()
    assert mlflow.active_run() is None  # the Trainer's reporter closed its run after optikit logged into it

    runs = client.search_runs([experiment])
    top = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(top) == 1, f"expected only the Trainer's run at the top level, got {[r.info.run_name for r in top]}"
    trainer_run = top[0]
    assert "optikit/sparse/accuracy" in trainer_run.data.metrics  # the headline figures, through trainer.log
    child = client.get_run(callback.mlflow_run_id)
    assert child.data.tags["mlflow.parentRunId"] == trainer_run.info.run_id
    variant_runs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == child.info.run_id]
    assert sorted(r.info.run_name for r in variant_runs) == sorted([callback.outcome.teacher.name, "sparse"])
    assert all({"accuracy", "f1_macro", "latency_ms.b1", "size_ratio"} <= set(r.data.metrics) for r in variant_runs)
    sparse = next(r for r in variant_runs if r.info.run_name == "sparse")
    assert "variant/variant.json" in {a.path for a in client.list_artifacts(sparse.info.run_id, "variant")}

    notes = callback.outcome.results.task.notes
    assert notes[0].startswith("the Trainer had no eval_dataset: the test set is optikit's seeded split")
    assert any("may overlap its training data" in n for n in notes)


def test_eval_rows_without_raw_text_are_not_a_test_set(tmp_path: Path) -> None:
    from optikit.integrations.hf import eval_rows_file

    token_ids_only = [{"input_ids": [101, 7, 102], "attention_mask": [1, 1, 1], "labels": 0}] * 4
    path, why = eval_rows_file(token_ids_only, ["title", "description"], "tag", ORDER, tmp_path)
    assert path is None and why == "the Trainer's eval_dataset has no 'title', 'description' column(s) (only token ids?)"
    path, why = eval_rows_file({"a": token_ids_only, "b": token_ids_only}, ["title"], "tag", ORDER, tmp_path)
    assert path is None and "2 eval datasets" in (why or "")
    assert eval_rows_file(None, ["title"], "tag", ORDER, tmp_path) == (None, "the Trainer had no eval_dataset")
    assert not list(tmp_path.iterdir())


def test_eval_rows_name_class_ids_by_their_class_label_first(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from optikit.integrations.hf import eval_rows_file

    class Table:  # a datasets.Dataset whose label column is a ClassLabel in sorted order
        column_names = ["title", "label"]
        features = {"label": SimpleNamespace(names=["language", "ops", "vision"])}

        def to_pandas(self) -> pd.DataFrame:
            return pd.DataFrame({"title": ["a b", "c d", "e f"], "label": [2, 0, 1]})

    path, why = eval_rows_file(Table(), ["title"], "tag", ORDER, tmp_path)
    assert why is None and path is not None and path.parent == tmp_path
    assert pd.read_csv(path).to_dict("list") == {"title": ["a b", "c d", "e f"], "tag": ["vision", "language", "ops"]}
    again, _ = eval_rows_file(Table(), ["title"], "tag", ORDER, tmp_path)
    assert again == path  # content-addressed: the same rows, the same file


def test_teacher_name_is_the_models() -> None:
    from types import SimpleNamespace

    from optikit.integrations.hf import model_name

    assert model_name(SimpleNamespace(config=SimpleNamespace(_name_or_path="org/my-bert/"))) == "my-bert"
    assert model_name(SimpleNamespace(config=SimpleNamespace(_name_or_path=""), name_or_path="C:\\m\\tiny")) == "tiny"
    assert model_name(SimpleNamespace(config=SimpleNamespace(_name_or_path=""))) == "SimpleNamespace"
