"""Images: folders of class_name/*.png|jpg read into float32 (N, C, H, W) arrays in [0, 1], and a model's input size.

Pixel values are only scaled to [0, 1] and resized here; normalisation (image_mean / image_std) belongs to the model
and happens in `optikit.models.Encoder`, so one image folder serves every model and every variant of it.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from optikit.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
MODES = {1: "L", 3: "RGB"}
PROCESSOR_CONFIG = "preprocessor_config.json"

Size = tuple[int, int]


def _image_files(directory: Path) -> list[Path]:
    """Image files directly in `directory`, sorted by name so every run reads them in the same order."""
    return sorted(p for p in directory.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def _class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _check_root(root: Path) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist: pass a folder laid out as CLASS_NAME/IMAGE.png")
    return root


def folder_files(root: Path) -> list[tuple[str, Path]]:
    """(class name, file) for every image in root/<class>/, classes and files sorted."""
    root = _check_root(root)
    return [(folder.name, path) for folder in _class_folders(root) for path in _image_files(folder)]


def _mode(channels: int) -> str:
    if channels not in MODES:
        raise DataError(f"images must have 1 (grayscale) or 3 (RGB) channels, not {channels}: "
                        "pass a model whose num_channels is 1 or 3")
    return MODES[channels]


def _read(path: Path, size: Size | None, mode: str) -> np.ndarray:
    """One image as float32 (C, H, W) in [0, 1]; `size` is (height, width)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            image = opened.convert(mode)
            if size is not None and (image.height, image.width) != tuple(size):
                # Bilinear to the model's input size: what transformers' image processors use by default.
                image = image.resize((int(size[1]), int(size[0])), Image.Resampling.BILINEAR)
            array = np.asarray(image, dtype=np.float32) / 255.0
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(f"cannot read image {path} ({type(exc).__name__}): replace or delete that file") from None
    return array[None, :, :] if array.ndim == 2 else np.ascontiguousarray(array.transpose(2, 0, 1))


def _stack(paths: Sequence[Path], size: Size | None, channels: int, shown: Sequence[str]) -> np.ndarray:
    mode = _mode(channels)
    arrays: list[np.ndarray] = []
    for path, name in zip(paths, shown, strict=True):
        array = _read(path, size, mode)
        if arrays and array.shape != arrays[0].shape:
            first, this = arrays[0].shape[1:], array.shape[1:]
            raise DataError(f"images differ in size ({shown[0]} is {first[1]}×{first[0]}, {name} is "
                            f"{this[1]}×{this[0]}): pass a model with a known input size (its "
                            f"{PROCESSOR_CONFIG}) so optikit resizes them, or resize the images")
        arrays.append(array)
    return np.stack(arrays).astype(np.float32, copy=False)


def load_image_folder(root: Path, size: Size | None, channels: int) -> tuple[np.ndarray, list[str], list[str]]:
    """Reads root/<class>/*.{png,jpg,jpeg,bmp,webp} → (float32 (N, C, H, W) in [0, 1], class per image,
    POSIX paths relative to root). `size` (height, width) resizes every image; None requires one common size."""
    root = _check_root(root)
    files = folder_files(root)
    if not files:
        raise DataError(f"no images found in {root}: put them in one folder per class, e.g. "
                        f"{root}/cat/1.png ({', '.join(s.lstrip('.') for s in IMAGE_SUFFIXES)})")
    classes = sorted({name for name, _ in files})
    if len(classes) < 2:
        raise DataError(f"{root} has images of a single class ({classes[0]!r}): a classifier needs at least two "
                        "class folders")
    relative = [path.relative_to(root).as_posix() for _, path in files]
    images = _stack([path for _, path in files], size, channels, relative)
    return images, [name for name, _ in files], relative


def load_image_files(paths: Sequence[Path], size: Size | None, channels: int) -> np.ndarray:
    """The images at `paths` (e.g. a table's image-path column), in order, as float32 (N, C, H, W) in [0, 1]."""
    paths = [Path(p).expanduser() for p in paths]
    if not paths:
        raise DataError("no image paths given: the image column is empty")
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"image {missing[0]} does not exist ({len(missing)} missing): fix the paths in the image "
                        "column (relative paths are read from the table's folder)")
    return _stack(paths, size, channels, [str(p) for p in paths])


def folder_digest(root: Path) -> str:
    """sha256 over the sorted relative paths and bytes of the images a folder holds: a renamed, added, removed or
    edited image changes it; files the loader ignores do not."""
    root = _check_root(root)
    digest = hashlib.sha256()
    for _, path in folder_files(root):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(b"\0")
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def _size(value: Any) -> Size | None:
    """A processor or config size: an int, [h, w], {height, width} or {shortest_edge}."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value > 0:
        return (value, value)
    if isinstance(value, list | tuple) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return (int(value[0]), int(value[1]))
    if isinstance(value, dict):
        if isinstance(value.get("height"), int) and isinstance(value.get("width"), int):
            return (int(value["height"]), int(value["width"]))
        # Processors that resize the shortest edge keep the aspect ratio; a square is what the model sees after
        # its centre crop, and what optikit feeds it (every image of a batch must share one size).
        if isinstance(value.get("shortest_edge"), int):
            return (int(value["shortest_edge"]), int(value["shortest_edge"]))
    return None


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise DataError(f"cannot read {path} as JSON: fix or remove that file") from None
    return data if isinstance(data, dict) else {}


def model_image_spec(path: Path) -> tuple[Size | None, int]:
    """(input size (height, width) or None, channels) of a Hugging Face image model folder.

    The size comes from preprocessor_config.json (crop_size when the processor crops, else size), else from
    config.json's image_size; channels from config.json's num_channels (3 when absent).
    """
    path = Path(path)
    processor = _read_json(path / PROCESSOR_CONFIG)
    config = _read_json(path / "config.json")
    size = None
    if processor.get("do_center_crop", "crop_size" in processor) and "crop_size" in processor:
        size = _size(processor["crop_size"])
    if size is None and "size" in processor:
        size = _size(processor["size"])
    if size is None and "image_size" in config:
        size = _size(config["image_size"])
    channels = config.get("num_channels", 3)
    return size, int(channels) if isinstance(channels, int) and not isinstance(channels, bool) else 3
