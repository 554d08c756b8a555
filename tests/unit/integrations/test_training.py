"""Training integration: the Trainer callback (a real 1-step Trainer run) and the plain-loop hook."""
from __future__ import annotations

from pathlib import Path

import pytest

from optikit.integrations import after_training
from optikit.models import load_module

FAST_BENCH = {"batch_sizes": (1,), "min_seconds": 0.05, "min_iterations": 3, "speedup_rounds": 4, "resamples": 100,
              "suite": "none"}


def test_after_training_benches_each_named_chain_and_writes_the_report(digits_teacher, tmp_path: Path) -> None:
    arch = {k: v for k, v in digits_teacher.architecture.items() if k != "name"}
    outcome = after_training(load_module(digits_teacher), {"sparse": ["prune-unstructured:amount=0.3"]},
                             data="digits", builder="digits-cnn", builder_kwargs=arch, out=tmp_path / "r",
                             threads=1, bench_options=FAST_BENCH)
    assert [v.name for v in outcome.results.variants] == [outcome.teacher.name, "sparse"]
    assert (tmp_path / "r" / "report.html").is_file()
    metrics = outcome.metrics()
    assert 0.5 < metrics["optikit/sparse/accuracy"] <= 1.0 and "optikit/sparse/latency_ms.b1" in metrics
    assert metrics["optikit/sparse/speedup.b1"] > 0  # the names MLflow logs them by
    assert outcome.results.best(max_loss=1.0) is not None


def test_trainer_callback_runs_when_training_ends_and_logs_through_the_trainer(tiny_bert_checkpoint: Path,
                                                                             text_csv: Path, tmp_path: Path) -> None:
    pytest.importorskip("accelerate")
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from optikit.integrations import OptikitCallback
    from optikit.integrations.modules import resolve_data

    torch.set_num_threads(1)
    data = resolve_data(text_csv, ["title", "description"], "tag")
    tok = AutoTokenizer.from_pretrained(str(tiny_bert_checkpoint))
    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert_checkpoint))
    enc = tok(list(data.inputs[:16]), padding=True, truncation=True, max_length=32)
    train = [{"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i],
              "labels": int(data.labels[i])} for i in range(16)]

    seen: list[dict] = []

    class Reporter(TrainerCallback):  # stands in for MLflow / TensorBoard reporters
        def on_log(self, args, state, control, logs=None, **kwargs):
            seen.append(dict(logs or {}))

    args = TrainingArguments(output_dir=str(tmp_path / "run"), max_steps=1, per_device_train_batch_size=8,
                             report_to=[], use_cpu=True, save_strategy="no", logging_strategy="no",
                             dataloader_num_workers=0, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=train, processing_class=tok, callbacks=[Reporter()])
    callback = OptikitCallback({"sparse": ["prune-unstructured:amount=0.3"]}, data=text_csv,
                               text_cols=["title", "description"], label_col="tag", max_length=32, threads=1,
                               bench_options=FAST_BENCH).attach(trainer)
    trainer.train()
    assert callback.outcome is not None
    assert callback.outcome.teacher.format == "hf"
    assert callback.outcome.teacher.name == tiny_bert_checkpoint.name  # the model's name, not output_dir's ("run")
    assert (tmp_path / "run" / "optikit" / "report.html").is_file()
    logged = [d for d in seen if "optikit/sparse/accuracy" in d]
    assert logged, "the reporter callbacks saw no optikit figures"
    assert any("optikit/sparse/accuracy" in d for d in trainer.state.log_history)
