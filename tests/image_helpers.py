"""Tiny image models and image folders made on the spot, for the image tests (no download, a few seconds)."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

SHAPES = ("circle", "square", "triangle")
COLOURS = {"circle": (220, 40, 40), "square": (40, 200, 60), "triangle": (50, 80, 230)}
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def write_shapes_folder(root: Path, per_class: int = 16, size: int = 32, seed: int = 0,
                        classes: tuple[str, ...] = SHAPES) -> Path:
    """root/<shape>/<i>.png: a coloured circle, square or triangle on a dark noisy background, placed and sized
    at random, so the classes differ visibly (colour and shape) and no two images are equal."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            background = rng.integers(0, 40, size=(size, size, 3), dtype=np.uint8)
            image = Image.fromarray(background, "RGB")
            draw = ImageDraw.Draw(image)
            r = int(rng.integers(size // 5, size // 3))
            cx, cy = (int(v) for v in rng.integers(r + 1, size - r - 1, size=2))
            colour = tuple(int(np.clip(c + rng.integers(-20, 21), 0, 255)) for c in COLOURS.get(name, (200, 200, 0)))
            if name == "circle":
                draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
            elif name == "square":
                draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=colour)
            else:
                draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
            image.save(root / name / f"{i:03d}.png")
    return root


def save_tiny_resnet(out: Path, labels: tuple[str, ...] = SHAPES, seed: int = 0) -> Path:
    """A 2-stage ResNet (embedding 8, widths 8/16, one bottleneck each), random weights, ImageNet normalisation."""
    import torch
    from transformers import ResNetConfig, ResNetForImageClassification, ViTImageProcessor

    torch.manual_seed(seed)
    config = ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                          num_labels=len(labels), image_size=32, id2label=dict(enumerate(labels)),
                          label2id={n: i for i, n in enumerate(labels)})
    ResNetForImageClassification(config).save_pretrained(str(out), safe_serialization=True)
    ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=IMAGENET_MEAN,
                      image_std=IMAGENET_STD).save_pretrained(str(out))
    return out


def save_tiny_vit(out: Path, labels: tuple[str, ...] = SHAPES, seed: int = 0) -> Path:
    """A 2-layer ViT (hidden 32, 4 heads, 8×8 patches of 32×32 images), random weights, mean/std 0.5."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(seed)
    config = ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
                       num_attention_heads=4, intermediate_size=64, num_labels=len(labels),
                       id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    ViTForImageClassification(config).save_pretrained(str(out), safe_serialization=True)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(str(out))
    return out


def folder_dataset(folder: Path, size: tuple[int, int] | None = (32, 32), channels: int = 3) -> Any:
    """The image Dataset of a class-folder tree, as data.py builds it (inputs in [0, 1], labels by sorted class)."""
    from optikit.data import Dataset, DataSpec
    from optikit.images import folder_digest, load_image_folder

    images, classes, _ = load_image_folder(folder, size, channels)
    names = tuple(sorted(set(classes)))
    labels = np.array([names.index(c) for c in classes], dtype=np.int64)
    spec = DataSpec(source="imagefolder", path=str(folder), sha256=folder_digest(folder))  # type: ignore[arg-type]
    return Dataset("image", images, labels, names, spec)


def image_variant(model_dir: Path, target: Path, dataset: Any, name: str = "tiny-resnet", fmt: str = "hf",
                  architecture: dict[str, Any] | None = None) -> Any:
    """A baseline variant directory around a saved model folder (what `optikit import` makes)."""
    from optikit.data import make_splits
    from optikit.variant import TaskInfo, Variant, library_versions, load_variant

    shutil.copytree(model_dir, target)
    Variant(id=f"{name}-0", name=name, format=fmt, path=target,  # type: ignore[arg-type]
            task=TaskInfo("image", dataset.label_names), data=dataset.spec, splits=make_splits(dataset.labels, 0),
            architecture=architecture or {}, versions=library_versions()).save_manifest(target)
    return load_variant(target)


def image_context(workdir: Path, dataset: Any) -> Any:
    """A PassContext serving `dataset` for every variant (passes read their splits through it)."""
    from optikit.passes.base import PassContext

    class Context(PassContext):
        def dataset(self, variant: Any) -> Any:
            return dataset

    return Context(workdir, threads=2, seed=0)


def train_briefly(variant: Any, dataset: Any, epochs: int = 8) -> None:
    """Fits the variant's HF model on its training split in place, so its predictions mean something."""
    from optikit.models import Encoder, load_module, save_module
    from optikit.training import TrainConfig, fit

    module = load_module(variant)
    encoder = Encoder(variant)
    fit(module, dataset.take(variant.splits.train), encoder,
        TrainConfig(epochs=epochs, learning_rate=0.01, batch_size=16, seed=0))
    save_module(module, "hf", variant.path)
