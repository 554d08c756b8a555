"""Slices: alignment on subsets of the test data (built-in short/long texts, column filters, user callables)."""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from optikit.errors import ConfigError
from optikit.harness.records import SliceScores

SliceFn = Callable[[Any], Any]  # frame -> boolean mask
# `column op value`, no eval: the operators a reader expects, nothing that could run code.
_SPEC = re.compile(r"^\s*([A-Za-z_][\w .-]*?)\s*(==|!=|<=|>=|=|<|>)\s*(.+?)\s*$")


def parse_spec(spec: str) -> SliceFn:
    """`column=value`, `column!=value`, `column<n`, `column<=n`, `column>n`, `column>=n` as a mask function."""
    match = _SPEC.match(spec)
    if not match:
        raise ConfigError(f"slice {spec!r} is not `column=value` or `column<n`: write e.g. tag=mlops or words<20")
    column, op, raw = match.groups()
    value = raw.strip("'\"")

    def mask(frame: Any) -> Any:
        if frame is None or column not in frame.columns:
            known = ", ".join(map(str, frame.columns)) if frame is not None else "none (image data)"
            raise ConfigError(f"slice {spec!r} names column {column!r}; the data's columns are {known}")
        col = frame[column]
        if op in ("=", "==", "!="):
            equal = col.astype(str) == value
            return ~equal if op == "!=" else equal
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"slice {spec!r} compares with {op}: give a number, e.g. {column}{op}10") from None
        numeric = col.astype(float)
        return {"<": numeric < number, "<=": numeric <= number, ">": numeric > number, ">=": numeric >= number}[op]

    return mask


def builtin_slices(texts: list[str]) -> dict[str, np.ndarray]:
    """Short and long texts: below the median word count, and at or above it."""
    words = np.array([len(t.split()) for t in texts])
    median = float(np.median(words)) if len(words) else 0.0
    return {f"short (< {median:g} words)": words < median, f"long (≥ {median:g} words)": words >= median}


def slice_masks(frame: Any, texts: list[str] | None, user: Mapping[str, str | SliceFn], n: int) -> dict[str, np.ndarray]:
    """Every slice as a boolean mask over the n test examples; user slices may be spec strings or callables."""
    masks = builtin_slices(texts) if texts is not None else {}
    for name, spec in user.items():
        fn = parse_spec(spec) if isinstance(spec, str) else spec
        mask = np.asarray(fn(frame), dtype=bool)
        if mask.shape != (n,):
            raise ConfigError(f"slice {name!r} returned {mask.shape} values for {n} examples: return one bool per row")
        masks[name] = mask
    return masks


def per_slice(labels: np.ndarray, preds: np.ndarray, masks: Mapping[str, np.ndarray],
              classes: int) -> dict[str, SliceScores]:
    """n, accuracy and macro F1 within each slice (F1 over the classes that occur in the slice)."""
    from sklearn.metrics import f1_score

    out: dict[str, SliceScores] = {}
    for name, mask in masks.items():
        n = int(mask.sum())
        if n == 0:
            out[name] = SliceScores(0, None, None)
            continue
        y, p = labels[mask], preds[mask]
        out[name] = SliceScores(n, float(np.mean(y == p)), float(f1_score(y, p, average="macro", zero_division=0)))
    return out
