"""Data: the labelled examples a task is trained and measured on, and the splits every measurement shares.

The splits come from one of three rules, recorded in every manifest: the user's own test file (`test-file`),
a column of the data that names each row's split (`split-col`), or a seeded stratified split (`seeded`).
Calibration rows for static quantization always come from train (or validation), never from test.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from optikit.datafiles import (
    DATASET_DICT_SPLIT,
    Source,
    content_sha256,
    detect_source,
    file_sha256,
    read_frame,
    table_columns,
)
from optikit.errors import DataError
from optikit.progress import warn
from optikit.splits import SplitRule, Splits, make_splits, splits_for

# Values a --split-col may hold, and the split each names.
SPLIT_VALUES = {"train": "train", "training": "train", "validation": "validation", "valid": "validation",
                "val": "validation", "dev": "validation", "test": "test", "testing": "test"}

__all__ = ["DataSpec", "Dataset", "Splits", "file_sha256", "load_data", "load_dataset", "load_digits", "load_table",
           "make_splits", "splits_for"]


def _portable(path: str | None, base: Path | None) -> str | None:
    """A path relative to `base` (a variant folder) where that is shorter, so a copied tree keeps working."""
    if path is None or base is None:
        return path
    try:
        rel = os.path.relpath(path, base)
    except ValueError:  # another drive on Windows
        return path
    return rel if len(rel) < len(path) else path


def _absolute(path: str | None, base: Path | None) -> str | None:
    if path is None or base is None or Path(path).is_absolute():
        return path
    return os.path.normpath(base / path)


@dataclass(frozen=True)
class DataSpec:
    """Where a task's examples come from, and how they were split; recorded in every manifest."""

    source: Source
    path: str | None = None
    text_cols: tuple[str, ...] = ()
    label_col: str | None = None
    sha256: str | None = None
    image_col: str | None = None  # a table whose column holds image paths (relative to the table's folder)
    test_path: str | None = None  # the user's own test set: every row of it is the test split
    test_sha256: str | None = None
    split_col: str | None = None  # a column naming each row's split (train / validation / test)
    image_size: tuple[int, int] | None = None  # images are resized to the model's input size when read
    channels: int = 1

    @property
    def split_rule(self) -> SplitRule:
        return "test-file" if self.test_path else "split-col" if self.split_col else "seeded"

    @property
    def key(self) -> str:
        """What identifies the data for caching: its content, never its location."""
        return "|".join(str(p) for p in (self.sha256 or self.source, self.test_sha256, self.split_col,
                                         self.image_size, self.channels) if p is not None)

    def to_dict(self, base: Path | None = None) -> dict[str, Any]:
        return {"source": self.source, "path": _portable(self.path, base), "text_cols": list(self.text_cols),
                "label_col": self.label_col, "sha256": self.sha256, "image_col": self.image_col,
                "test_path": _portable(self.test_path, base), "test_sha256": self.test_sha256,
                "split_col": self.split_col, "split_rule": self.split_rule,
                "image_size": list(self.image_size) if self.image_size else None, "channels": self.channels}

    @classmethod
    def from_dict(cls, d: dict[str, Any], base: Path | None = None) -> DataSpec:
        size = d.get("image_size")
        return cls(source=d["source"], path=_absolute(d.get("path"), base), text_cols=tuple(d.get("text_cols") or ()),
                   label_col=d.get("label_col"), sha256=d.get("sha256"), image_col=d.get("image_col"),
                   test_path=_absolute(d.get("test_path"), base), test_sha256=d.get("test_sha256"),
                   split_col=d.get("split_col"), image_size=(int(size[0]), int(size[1])) if size else None,
                   channels=int(d.get("channels") or 1))


@dataclass(frozen=True)
class Dataset:
    """Examples (images as float32 arrays in [0, 1] or texts) with integer labels and their names."""

    kind: Literal["image", "text"]
    inputs: Any  # np.ndarray (N, C, H, W) for images, list[str] for texts
    labels: np.ndarray
    label_names: tuple[str, ...]
    spec: DataSpec
    frame: Any = field(default=None, repr=False)  # the source rows (pandas) for slices and reports
    parts: np.ndarray | None = field(default=None, repr=False)  # per row: the split a file or column assigned
    notes: tuple[str, ...] = ()  # what a reader of the results must know about this data (dropped rows, overlap)

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, indices: tuple[int, ...] | list[int] | np.ndarray) -> Dataset:
        idx = np.asarray(indices, dtype=int)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self)):
            raise DataError(f"split indices reach row {int(idx.max())} but the data has {len(self)} rows: the manifest "
                            "does not belong to this data; pass the data the variant was made with")
        inputs = self.inputs[idx] if self.kind == "image" else [self.inputs[i] for i in idx]
        frame = self.frame.iloc[idx].reset_index(drop=True) if self.frame is not None else None
        parts = self.parts[idx] if self.parts is not None else None
        return Dataset(self.kind, inputs, self.labels[idx], self.label_names, self.spec, frame, parts, self.notes)

    def texts(self) -> list[str]:
        """A human-readable form of each example, for reports."""
        if self.kind == "text":
            return list(self.inputs)
        if self.frame is not None and "path" in self.frame.columns:
            return [str(p) for p in self.frame["path"]]
        return [f"image #{i}" for i in range(len(self))]


def load_digits() -> Dataset:
    """scikit-learn's bundled 8×8 digits (1,797 real scans, no download), scaled to [0, 1]."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    images = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]
    names = tuple(str(n) for n in bunch.target_names)
    return Dataset("image", images, bunch.target.astype(np.int64), names, DataSpec("digits"))


def _map_labels(values: Any, label_names: tuple[str, ...] | None, where: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Integer labels in the model's label order (`label_names`, from its id2label), or sorted names without one."""
    import pandas as pd

    if label_names is None:
        strings = values.astype(str)
        names = tuple(sorted(strings.unique()))
        lookup = {n: i for i, n in enumerate(names)}
        return strings.map(lookup).to_numpy(dtype=np.int64), names
    strings = values.astype(str)
    known = set(label_names)
    if pd.api.types.is_integer_dtype(values) and not set(strings.unique()) <= known:
        # Class ids (e.g. a datasets ClassLabel column): they index the model's labels directly.
        ids = values.to_numpy(dtype=np.int64)
        if ids.min() < 0 or ids.max() >= len(label_names):
            raise DataError(f"{where} holds label ids {ids.min()}..{ids.max()} but the model has {len(label_names)} "
                            f"labels {list(label_names)}: pass a label column the model knows")
        return ids, label_names
    unknown = sorted(set(strings.unique()) - known)
    if unknown:
        raise DataError(f"{where} has label(s) {unknown} that the model does not know: the model's labels are "
                        f"{list(label_names)}, the data's are {sorted(strings.unique())}; relabel the data, or give "
                        "the model's names with --labels if its config has none")
    lookup = {n: i for i, n in enumerate(label_names)}
    return strings.map(lookup).to_numpy(dtype=np.int64), label_names


def _read_part(path: Path, text_cols: tuple[str, ...], label_col: str, image_col: str | None,
               extra_cols: tuple[str, ...], size: tuple[int, int] | None, channels: int) -> tuple[Any, Any, Any, list[str]]:
    """(inputs, label values, frame, notes) of one file or folder."""
    import pandas as pd

    source = detect_source(path)
    notes: list[str] = []
    if source == "imagefolder":
        from optikit.images import load_image_folder

        images, classes, rel = load_image_folder(path, size, channels)
        frame = pd.DataFrame({"path": rel, "label": classes})
        return images, frame["label"], frame, notes
    frame = read_frame(path, source)
    table_columns(frame, path, (*text_cols, *((image_col,) if image_col else ()), label_col, *extra_cols))
    missing = frame[label_col].isna() | (frame[label_col].astype(str).str.strip() == "")
    if missing.any():
        notes.append(f"{int(missing.sum())} row(s) of {path.name} without a label in {label_col!r} were left out")
        frame = frame[~missing]
    frame = frame.reset_index(drop=True)
    if frame.empty:
        return [], frame[label_col], frame, notes
    if image_col:
        from optikit.images import load_image_files

        files = [Path(p) if Path(p).is_absolute() else path.parent / str(p) for p in frame[image_col]]
        return load_image_files(files, size, channels), frame[label_col], frame.rename(columns={image_col: "path"}), notes
    texts = frame[list(text_cols)].fillna("").astype(str).agg(" ".join, axis=1).str.strip()
    empty = texts == ""
    if empty.any():
        notes.append(f"{int(empty.sum())} row(s) of {path.name} with empty text in {', '.join(text_cols)} were left out")
        frame, texts = frame[~empty].reset_index(drop=True), texts[~empty].reset_index(drop=True)
    return texts.tolist(), frame[label_col], frame, notes


def load_data(path: str | Path, *, text_cols: tuple[str, ...] | list[str] = (), label_col: str | None = None,
              image_col: str | None = None, label_names: tuple[str, ...] | None = None,
              test_path: str | Path | None = None, split_col: str | None = None,
              image_size: tuple[int, int] | None = None, channels: int = 3) -> Dataset:
    """The user's evaluation data: a table (CSV, TSV, Parquet, JSON Lines), a `datasets.save_to_disk` folder or an
    image folder tree, plus optionally their own test file, mapped to `label_names` (the model's order) if given."""
    import pandas as pd

    path = Path(path).expanduser()
    source = detect_source(path)
    text_cols = tuple(text_cols)
    if source == "imagefolder":
        label_col = "label"
    elif not label_col or not (text_cols or image_col):
        raise DataError(f"{path.name} is a table: name its columns with --text-cols A,B (or --image-col C) and "
                        "--label-col L")
    if source == "hf-disk" and split_col is None and test_path is None and (path / "dataset_dict.json").is_file():
        split_col = DATASET_DICT_SPLIT  # a DatasetDict's own train / validation / test splits
    extra = (split_col,) if split_col and split_col != DATASET_DICT_SPLIT else ()
    inputs, values, frame, notes = _read_part(path, text_cols, label_col, image_col, extra, image_size, channels)
    test_sha = None
    parts: np.ndarray | None = None
    if test_path is not None:
        test_path = Path(test_path).expanduser()
        t_inputs, t_values, t_frame, t_notes = _read_part(test_path, text_cols, label_col, image_col, (), image_size,
                                                          channels)
        notes += t_notes
        test_sha = content_sha256(test_path)
        parts = np.array(["data"] * len(values) + ["test"] * len(t_values))
        inputs = np.concatenate([inputs, t_inputs]) if isinstance(inputs, np.ndarray) else [*inputs, *t_inputs]
        values = pd.concat([values, t_values], ignore_index=True)
        frame = pd.concat([frame, t_frame], ignore_index=True)
    elif split_col is not None:
        raw = frame[split_col].astype(str).str.strip().str.lower()
        bad = sorted(set(raw.unique()) - set(SPLIT_VALUES))
        if bad:
            raise DataError(f"column {split_col!r} holds {bad}: a split column may hold train, validation (val, dev) "
                            "and test; fix those rows or drop --split-col")
        parts = raw.map(SPLIT_VALUES).to_numpy()
    if len(values) == 0:
        raise DataError(f"{path.name} has no labelled rows: give a file with values in column {label_col!r}")
    labels, names = _map_labels(values, label_names, f"column {label_col!r} of {path.name}")
    if len(names) < 2:
        raise DataError(f"{path.name} has a single class ({names[0]!r}) in {label_col!r}: "
                        "a classifier needs at least two labels")
    if label_names is not None:
        absent = [n for i, n in enumerate(names) if i not in set(labels.tolist())]
        if absent:
            warn(f"model label(s) {absent} never appear in {path.name}: their per-class figures will be empty")
    kind: Literal["image", "text"] = "image" if isinstance(inputs, np.ndarray) else "text"
    spec = DataSpec(source, str(path.resolve()), text_cols, label_col, content_sha256(path), image_col,
                    str(test_path.resolve()) if isinstance(test_path, Path) else None, test_sha, split_col,
                    image_size if kind == "image" else None, channels if kind == "image" else 1)
    dataset = Dataset(kind, inputs, labels, names, spec, frame, parts, tuple(notes))
    return replace(dataset, notes=(*dataset.notes, *_overlap_notes(dataset)))


def _overlap_notes(dataset: Dataset) -> list[str]:
    """Identical examples on both sides of a user-made split: counted, because they inflate test scores."""
    if dataset.parts is None:
        return []
    keys = ([str(t) for t in dataset.inputs] if dataset.kind == "text"
            else [np.ascontiguousarray(x).tobytes() for x in dataset.inputs])
    test = {k for k, p in zip(keys, dataset.parts, strict=True) if p == "test"}
    rest = {k for k, p in zip(keys, dataset.parts, strict=True) if p != "test"}
    shared = len(test & rest)
    if not shared:
        return []
    return [f"{shared} test example(s) also appear in the rest of the data (identical "
            f"{'texts' if dataset.kind == 'text' else 'images'}): their scores may be optimistic"]


def load_table(path: str | Path, text_cols: tuple[str, ...] | list[str], label_col: str) -> Dataset:
    """A text table with named text columns (joined by a space) and a label column; labels in sorted order."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"data file {path} does not exist: pass an existing CSV or Parquet file with --data")
    if not tuple(text_cols) or not label_col:
        raise DataError("a table needs text columns and a label column: pass --text-cols A,B --label-col C")
    return load_data(path, text_cols=text_cols, label_col=label_col)


def _verified(path: str | Path, expected: str | None, what: str) -> Path:
    """`path`, once its content hash is the one the variant recorded (checked before a byte of it is parsed)."""
    file = Path(path).expanduser()
    if not file.exists():
        raise DataError(f"{what} {file} does not exist (moved?): pass --data (and --test-data) pointing at it; "
                        f"its sha256 must be {expected}")
    found = content_sha256(file)
    if expected and found != expected:
        raise DataError(f"{what} {file.name} has sha256 {found}, but the variant was made with {expected}: pass the "
                        "file the variant was made with, or import the model again on this data")
    return file


def load_dataset(spec: DataSpec, label_names: tuple[str, ...] | None = None) -> Dataset:
    """Loads what a manifest recorded; each file's hash is checked before a byte of it is parsed."""
    if spec.source == "digits":
        return load_digits()
    if spec.path is None:
        raise DataError("the data spec names no file: pass --data PATH")
    path = _verified(spec.path, spec.sha256, "data")
    test = _verified(spec.test_path, spec.test_sha256, "test data") if spec.test_path else None
    return load_data(path, text_cols=spec.text_cols, label_col=spec.label_col, image_col=spec.image_col,
                     label_names=label_names, test_path=test, split_col=spec.split_col, image_size=spec.image_size,
                     channels=spec.channels)


def repoint(spec: DataSpec, data: str | Path | None = None, test_data: str | Path | None = None) -> DataSpec:
    """The same data at a new place (a moved variant): the content must match what the variant recorded."""
    if data is not None:
        spec = replace(spec, path=str(_verified(data, spec.sha256, "data").resolve()))
    if test_data is not None:
        spec = replace(spec, test_path=str(_verified(test_data, spec.test_sha256, "test data").resolve()))
    return spec
