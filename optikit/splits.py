"""Splits: which rows train, validate, calibrate and test, by the rule the data's files or columns give, else
seeded and stratified. Calibration rows always come from train (or validation), never from test."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from optikit.errors import DataError

if TYPE_CHECKING:
    from optikit.data import Dataset

SPLITS = ("train", "validation", "test", "calibration")
MIN_PER_CLASS = 5  # a class needs one example in each of test/validation plus training examples
CALIBRATION_MAX = 128
SplitRule = Literal["seeded", "test-file", "split-col"]


@dataclass(frozen=True)
class Splits:
    """Indices into the dataset; calibration is a stratified subset of train (it needs no labels of its own)."""

    seed: int
    train: tuple[int, ...]
    validation: tuple[int, ...]
    test: tuple[int, ...]
    calibration: tuple[int, ...]
    rule: SplitRule = "seeded"

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "rule": self.rule, **{name: list(getattr(self, name)) for name in SPLITS}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Splits:
        return cls(seed=int(d["seed"]), rule=d.get("rule", "seeded"),
                   **{name: tuple(int(i) for i in d[name]) for name in SPLITS})



def _split_off(idx: np.ndarray, labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rest, held-out) of `idx`: stratified where every class has two rows, else a plain seeded shuffle."""
    from sklearn.model_selection import train_test_split

    n_out = max(1, round(len(idx) * fraction))
    if len(idx) < 2:
        return idx, idx[:0]
    _, counts = np.unique(labels[idx], return_counts=True)
    strat = labels[idx] if counts.min() >= 2 and n_out >= len(counts) else None
    rest, out = train_test_split(idx, test_size=n_out, random_state=seed, stratify=strat)
    return np.asarray(rest), np.asarray(out)


def _calibration(train: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.model_selection import train_test_split

    n_cal = min(CALIBRATION_MAX, max(1, len(train) // 2))
    if n_cal >= len(train):
        return train
    classes, counts = np.unique(labels[train], return_counts=True)
    strat = labels[train] if n_cal >= len(classes) and counts.min() >= 2 else None
    cal, _ = train_test_split(train, train_size=n_cal, random_state=seed, stratify=strat)
    return np.asarray(cal)


def _sorted(part: np.ndarray) -> tuple[int, ...]:
    return tuple(sorted(int(i) for i in part))


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
    return Splits(seed, _sorted(train_idx), _sorted(val_idx), _sorted(test_idx), _sorted(cal_idx))


VALIDATION_SHARE = 0.125  # of the non-test rows, when the user's files name a test set but no validation set


def splits_for(dataset: Dataset, seed: int) -> Splits:
    """The splits by the data's rule: the user's test file, the split column, or seeded and stratified."""
    rule = dataset.spec.split_rule
    if dataset.parts is None or rule == "seeded":
        return make_splits(dataset.labels, seed)
    idx = np.arange(len(dataset))
    test = idx[dataset.parts == "test"]
    if len(test) == 0:
        raise DataError(f"column {dataset.spec.split_col!r} marks no row as test: mark the rows to measure on "
                        "with 'test', or pass --test-data FILE")
    train = idx[dataset.parts == "train"] if rule == "split-col" else idx[dataset.parts != "test"]
    validation = idx[dataset.parts == "validation"] if rule == "split-col" else idx[:0]
    if len(train) + len(validation) == 0:
        raise DataError("every row is a test row: calibration and validation need rows of their own; "
                        "pass them with --data (and the test set with --test-data)")
    if len(validation) == 0:
        train, validation = _split_off(train, dataset.labels, VALIDATION_SHARE, seed)
    if len(train) == 0:
        train = validation  # a split column with validation and test only: calibrate on validation
    calibration = _calibration(train, dataset.labels, seed)
    return Splits(seed, _sorted(train), _sorted(validation), _sorted(test), _sorted(calibration), rule=rule)
