"""Slices: safe column specs (no eval), built-in short/long texts, callables, per-slice figures."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from optikit.errors import ConfigError
from optikit.harness.records import SliceScores
from optikit.harness.slices import builtin_slices, parse_spec, per_slice, slice_masks

FRAME = pd.DataFrame({"tag": ["mlops", "cv", "mlops", "nlp"], "words": [3, 10, 25, 7]})


@pytest.mark.parametrize(("spec", "expected"), [
    ("tag=mlops", [True, False, True, False]),
    ("tag == 'mlops'", [True, False, True, False]),
    ("tag!=mlops", [False, True, False, True]),
    ("words<10", [True, False, False, True]),
    ("words<=10", [True, True, False, True]),
    ("words>7", [False, True, True, False]),
    ("words>=7", [False, True, True, True]),
])
def test_parse_spec_filters_rows(spec: str, expected: list[bool]) -> None:
    assert list(parse_spec(spec)(FRAME)) == expected


@pytest.mark.parametrize("spec", ["__import__('os')", "tag", "words<ten"])
def test_parse_spec_rejects_what_is_not_a_filter(spec: str) -> None:
    with pytest.raises(ConfigError):
        parse_spec(spec)(FRAME)


def test_parse_spec_names_the_columns_when_one_is_missing() -> None:
    with pytest.raises(ConfigError, match="tag, words"):
        parse_spec("label=x")(FRAME)


def test_builtin_slices_split_at_the_median_word_count() -> None:
    masks = builtin_slices(["a b", "a b c", "a b c d", "a"])  # median 2.5
    assert [list(m) for m in masks.values()] == [[True, False, False, True], [False, True, True, False]]


def test_slice_masks_take_specs_and_callables_and_per_slice_scores_them() -> None:
    masks = slice_masks(FRAME, None, {"ops": "tag=mlops", "odd": lambda f: f.index % 2 == 1}, 4)
    labels, preds = np.array([0, 1, 0, 2]), np.array([0, 1, 1, 2])
    out = per_slice(labels, preds, masks, 3)
    assert out["ops"] == SliceScores(n=2, accuracy=0.5, f1_macro=pytest.approx(1 / 3))
    assert out["odd"] == SliceScores(n=2, accuracy=1.0, f1_macro=1.0)


def test_slice_masks_reject_a_callable_of_the_wrong_length() -> None:
    with pytest.raises(ConfigError, match="one bool per row"):
        slice_masks(FRAME, None, {"bad": lambda f: [True]}, 4)
