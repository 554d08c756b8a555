"""Teachers: train a recipe into the baseline Variant, cached by content so a second run does not retrain."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING

from optikit._io import atomic_directory
from optikit.data import Dataset, DataSpec, load_data, load_dataset, load_digits, make_splits
from optikit.errors import ConfigError
from optikit.models import Encoder, build_architecture, load_hf_classifier, save_module
from optikit.progress import say
from optikit.recipes import Recipe, load_recipe, resolve_checkpoint
from optikit.training import TrainingGuard, evaluate_loss, fit, seed_everything
from optikit.variant import TaskInfo, Variant, library_versions, load_variant, variant_id

if TYPE_CHECKING:
    from optikit.importing import DataOptions


def optikit_home() -> Path:
    """Where teachers and variants are cached: $OPTIKIT_HOME, else ~/.cache/optikit."""
    return Path(os.environ.get("OPTIKIT_HOME") or Path.home() / ".cache" / "optikit").expanduser()


def recipe_dataset(recipe: Recipe, data: str | Path | None = None, text_cols: tuple[str, ...] | None = None,
                   label_col: str | None = None) -> Dataset:
    """The recipe's data, with --data / --text-cols / --label-col (or the recipe's environment variable) applied."""
    src = recipe.data
    if src.source == "digits" and data is None:
        return load_digits()
    path = data or (src.path_env and os.environ.get(src.path_env)) or src.path
    if path is None:
        raise ConfigError(f"teacher {recipe.name} needs data: pass --data PATH")
    cols = tuple(text_cols or src.text_cols)
    label = label_col or src.label_col
    if not cols or not label:
        raise ConfigError(f"teacher {recipe.name} needs --text-cols and --label-col for {path}")
    dataset = load_data(path, text_cols=cols, label_col=label)
    own = _checkpoint_labels(recipe)
    if own and set(own) == set(dataset.label_names) and own != dataset.label_names:
        dataset = load_data(path, text_cols=cols, label_col=label, label_names=own)
    return dataset


def _checkpoint_labels(recipe: Recipe) -> tuple[str, ...] | None:
    """A checkpoint that is already a classifier of these labels keeps its own order (its id2label), rather than
    optikit renumbering them by their sorted names; other checkpoints get the sorted order and a new head."""
    if recipe.format != "hf" or not recipe.checkpoint:
        return None
    import json

    from optikit.importing import id2label_names

    config = resolve_checkpoint(recipe.checkpoint) / "config.json"
    id2label = json.loads(config.read_text(encoding="utf-8")).get("id2label") if config.is_file() else None
    return id2label_names(id2label, f"checkpoint {recipe.checkpoint}") or None


def teach(recipe_or_name: str | Recipe, data: str | Path | None = None, *, text_cols: tuple[str, ...] | None = None,
          label_col: str | None = None, cache: Path | None = None, force: bool = False) -> Variant:
    """Trains (or reuses) the teacher of `recipe_or_name` and returns its Variant."""
    recipe = recipe_or_name if isinstance(recipe_or_name, Recipe) else load_recipe(recipe_or_name)
    dataset = recipe_dataset(recipe, data, text_cols, label_col)
    seed = recipe.train.seed
    splits = make_splits(dataset.labels, seed)
    versions = library_versions()
    key_versions = {k: versions.get(k) for k in ("torch", "transformers")}
    data_key = dataset.spec.sha256 or dataset.spec.source
    vid = variant_id("teacher", recipe.to_dict(), data_key, dataset.spec.text_cols, dataset.spec.label_col, key_versions)
    target = (cache or optikit_home() / "teachers") / f"{recipe.name}-{vid}"
    if target.exists() and not force:
        return load_variant(target)
    task = TaskInfo(dataset.kind, dataset.label_names, recipe.max_length)
    say(f"training teacher {recipe.name} on {len(splits.train)} examples ({recipe.train.epochs} epochs)")
    seed_everything(seed)
    checkpoint_dir: Path | None = None
    if recipe.format == "torch":
        arch = dict(recipe.architecture)
        if "num_classes" in arch and arch["num_classes"] != len(dataset.label_names):
            raise ConfigError(f"recipe {recipe.name} has num_classes={arch['num_classes']} but the data has "
                              f"{len(dataset.label_names)} labels: fix the recipe")
        module = build_architecture(arch)
        architecture = arch
    else:
        checkpoint_dir = resolve_checkpoint(recipe.checkpoint or "")
        names = list(dataset.label_names)
        module = load_hf_classifier(checkpoint_dir, num_labels=len(names),
                                    id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
        architecture = {"checkpoint": recipe.checkpoint}
    with atomic_directory(target, replace=True) as tmp:
        if checkpoint_dir is not None:
            from optikit.models import copy_tokenizer

            copy_tokenizer(checkpoint_dir, tmp)
        variant = Variant(id=vid, name=recipe.name, format=recipe.format, path=tmp, task=task, data=dataset.spec,
                          splits=splits, architecture=architecture, versions=versions)
        encoder = Encoder(variant)
        # A diverged teacher fails here, inside the atomic directory: nothing is cached for the next run to reuse.
        guard = TrainingGuard(f"teacher {recipe.name}", f"[train] learning_rate in {recipe.source}",
                              f"[train] epochs in {recipe.source}")
        history = fit(module, dataset.take(splits.train), encoder, recipe.train,
                      validation=dataset.take(splits.validation), desc=f"teach {recipe.name}", guard=guard)
        test_loss, test_acc = evaluate_loss(module, dataset.take(splits.test), encoder)
        save_module(module, recipe.format, tmp)
        variant = dataclasses.replace(variant, report={
            "recipe": recipe.to_dict(), "history": history, "test_loss": test_loss, "test_accuracy": test_acc})
        variant.save_manifest(tmp)
    say(f"teacher {recipe.name}: test accuracy {test_acc:.4f}")
    return load_variant(target)


def resolve_model(model: str | Path | None, data: str | Path | None = None, options: DataOptions | None = None) -> Variant:
    """MODEL on the command line: a teacher name or recipe (trained or taken from the cache), an optikit variant
    directory, or the user's own model (imported on first use: see optikit.importing)."""
    from optikit.importing import DataOptions, import_model
    from optikit.recipes import builtin_recipes

    options = options or DataOptions(data=str(data) if data else None)
    if model is None:
        return teach("digits-cnn")
    text = str(model)
    if text in builtin_recipes("teachers") or text.endswith(".toml"):
        return teach(text, options.data, text_cols=options.text_cols or None, label_col=options.label_col)
    return import_model(text, options)


def dataset_for(variant: Variant) -> Dataset:
    """The data a variant was made with (the same files, checked by hash), its labels in the model's order."""
    return load_dataset(variant.data, variant.task.label_names)


__all__ = ["DataSpec", "dataset_for", "optikit_home", "resolve_model", "teach"]
