"""Data: the labelled examples a task is trained and measured on, and their deterministic stratified splits."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from optikit.errors import DataError

SPLITS = ("train", "validation", "test", "calibration")
MIN_PER_CLASS = 5  # a class needs one example in each of test/validation plus training examples
CALIBRATION_MAX = 128


@dataclass(frozen=True)
class DataSpec:
    """Where a task's examples come from; recorded in every manifest so a variant names its data."""

    source: Literal["digits", "csv", "parquet"]
    path: str | None = None
    text_cols: tuple[str, ...] = ()
    label_col: str | None = None
    sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "path": self.path, "text_cols": list(self.text_cols),
                "label_col": self.label_col, "sha256": self.sha256}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataSpec:
        return cls(source=d["source"], path=d.get("path"), text_cols=tuple(d.get("text_cols") or ()),
                   label_col=d.get("label_col"), sha256=d.get("sha256"))


@dataclass(frozen=True)
class Splits:
    """Indices into the dataset; calibration is a stratified subset of train (it needs no labels of its own)."""

    seed: int
    train: tuple[int, ...]
    validation: tuple[int, ...]
    test: tuple[int, ...]
    calibration: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, **{name: list(getattr(self, name)) for name in SPLITS}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Splits:
        return cls(seed=int(d["seed"]), **{name: tuple(int(i) for i in d[name]) for name in SPLITS})


@dataclass(frozen=True)
class Dataset:
    """Examples (images as float32 arrays or texts) with integer labels and their names."""

    kind: Literal["image", "text"]
    inputs: Any  # np.ndarray (N, 1, H, W) for images, list[str] for texts
    labels: np.ndarray
    label_names: tuple[str, ...]
    spec: DataSpec
    frame: Any = field(default=None, repr=False)  # the source rows (pandas) for slices and reports

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, indices: tuple[int, ...] | list[int] | np.ndarray) -> Dataset:
        idx = np.asarray(indices, dtype=int)
        inputs = self.inputs[idx] if self.kind == "image" else [self.inputs[i] for i in idx]
        frame = self.frame.iloc[idx].reset_index(drop=True) if self.frame is not None else None
        return Dataset(self.kind, inputs, self.labels[idx], self.label_names, self.spec, frame)

    def texts(self) -> list[str]:
        """A human-readable form of each example, for reports."""
        if self.kind == "text":
            return list(self.inputs)
        return [f"image #{i}" for i in range(len(self))]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_digits() -> Dataset:
    """scikit-learn's bundled 8×8 digits (1,797 real scans, no download), scaled to [0, 1]."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    images = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]
    names = tuple(str(n) for n in bunch.target_names)
    return Dataset("image", images, bunch.target.astype(np.int64), names, DataSpec("digits"))


def load_table(path: str | Path, text_cols: tuple[str, ...] | list[str], label_col: str) -> Dataset:
    """A CSV or Parquet file with named text columns (joined by a space) and a label column."""
    import pandas as pd

    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"data file {path} does not exist: pass an existing CSV or Parquet file with --data")
    text_cols = tuple(text_cols)
    if not text_cols or not label_col:
        raise DataError("a table needs text columns and a label column: pass --text-cols A,B --label-col C")
    suffix = path.suffix.lower()
    try:
        if suffix in {".parquet", ".pq"}:
            frame = pd.read_parquet(path)
            source: Literal["csv", "parquet"] = "parquet"
        else:
            frame = pd.read_csv(path)
            source = "csv"
    except Exception as exc:  # pandas raises many types for unreadable files
        raise DataError(f"cannot read {path} as {suffix.lstrip('.') or 'CSV'} ({type(exc).__name__}): "
                        "pass a valid CSV or Parquet file") from None
    missing = [c for c in (*text_cols, label_col) if c not in frame.columns]
    if missing:
        raise DataError(f"{path.name} has no column {', '.join(map(repr, missing))}: its columns are "
                        f"{', '.join(map(str, frame.columns))}; choose them with --text-cols and --label-col")
    frame = frame.dropna(subset=[label_col]).reset_index(drop=True)
    if frame.empty:
        raise DataError(f"{path.name} has no labelled rows: give a file with values in column {label_col!r}")
    texts = frame[list(text_cols)].fillna("").astype(str).agg(" ".join, axis=1).str.strip().tolist()
    label_values = frame[label_col].astype(str)
    names = tuple(sorted(label_values.unique()))
    if len(names) < 2:
        raise DataError(f"{path.name} has a single class ({names[0]!r}) in {label_col!r}: "
                        "a classifier needs at least two labels")
    lookup = {name: i for i, name in enumerate(names)}
    labels = label_values.map(lookup).to_numpy(dtype=np.int64)
    spec = DataSpec(source, str(path.resolve()), text_cols, label_col, file_sha256(path))
    return Dataset("text", texts, labels, names, spec, frame)


def load_dataset(spec: DataSpec) -> Dataset:
    """Loads what a manifest recorded, checking that a file has not changed since the variant was made."""
    if spec.source == "digits":
        return load_digits()
    if spec.path is None or spec.label_col is None:
        raise DataError("the data spec names no file: pass --data PATH")
    dataset = load_table(spec.path, spec.text_cols, spec.label_col)
    if spec.sha256 and dataset.spec.sha256 != spec.sha256:
        raise DataError(f"{spec.path} changed since this model was trained (sha256 differs): "
                        "restore the file or retrain the teacher on the new data")
    return dataset


def make_splits(labels: np.ndarray, seed: int, test: float = 0.2, validation: float = 0.1) -> Splits:
    """Stratified train/validation/test from `seed`; calibration is a stratified subset of train."""
    from sklearn.model_selection import train_test_split

    if len(labels) == 0:
        raise DataError("the dataset is empty: give a file with labelled rows")
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2:
        raise DataError("the dataset has a single class: a classifier needs at least two labels")
    if counts.min() < MIN_PER_CLASS:
        raise DataError(f"a class has only {counts.min()} examples: each class needs at least {MIN_PER_CLASS} "
                        "for stratified splits; add examples or drop that class")
    idx = np.arange(len(labels))
    rest, test_idx = train_test_split(idx, test_size=test, random_state=seed, stratify=labels)
    train_idx, val_idx = train_test_split(rest, test_size=validation / (1 - test), random_state=seed,
                                          stratify=labels[rest])
    n_cal = min(CALIBRATION_MAX, len(train_idx) // 2)
    if n_cal >= len(classes):
        cal_idx, _ = train_test_split(train_idx, train_size=n_cal, random_state=seed, stratify=labels[train_idx])
    else:
        cal_idx = train_idx[:n_cal]
    return Splits(seed, *(tuple(sorted(int(i) for i in s)) for s in (train_idx, val_idx, test_idx, cal_idx)))
