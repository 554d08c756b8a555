"""Behavioural suites: the shipped files load, outcomes follow MFT / INV / DIR rules, regressions vs the baseline."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from optikit.data import load_digits, make_splits
from optikit.errors import ConfigError
from optikit.harness.behavioral import auto_suite, behavioral, case_outcomes, load_suite, shift

TAGS = ("computer-vision", "mlops", "natural-language-processing", "other")


def test_minilm_tags_suite_has_thirty_cases_of_every_type() -> None:
    suite = load_suite("minilm-tags", TAGS)
    assert len(suite.cases) >= 30
    assert {c.type for c in suite.cases} == {"mft", "inv", "dir"}
    assert all(isinstance(t, str) for t in suite.inputs)
    assert auto_suite("text", TAGS, "csv") == "minilm-tags"


def test_a_suite_naming_an_unknown_label_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="names label"):
        load_suite("minilm-tags", ("a", "b"))


def _toy(tmp_path: Path):
    path = tmp_path / "toy.toml"
    path.write_text('''
[suite]
name = "toy"
[[case]]
id = "m"
type = "mft"
text = "x"
label = "a"
[[case]]
id = "i"
type = "inv"
text = "x"
perturbed = ["x!", "X"]
[[case]]
id = "d"
type = "dir"
text = "x"
perturbed = ["x b"]
toward = "b"
''')
    return load_suite(str(path), ("a", "b"))


def test_case_outcomes_follow_mft_inv_dir_rules(tmp_path: Path) -> None:
    suite = _toy(tmp_path)
    assert suite.inputs == ["x", "x!", "X", "x b"]
    good = np.array([[0.8, 0.2], [0.7, 0.3], [0.9, 0.1], [0.6, 0.4]])
    bad = np.array([[0.4, 0.6], [0.7, 0.3], [0.9, 0.1], [0.7, 0.3]])  # x → b, x b lowers P(b)
    assert case_outcomes(suite, good) == {"m": True, "i": True, "d": True}
    assert case_outcomes(suite, bad) == {"m": False, "i": False, "d": False}
    rec = behavioral(suite, case_outcomes(suite, bad), case_outcomes(suite, good))
    assert rec["pass_rate"] == 0.0 and rec["by_type"] == {"mft": 0.0, "inv": 0.0, "dir": 0.0}
    assert [r["id"] for r in rec["regressions"]] == ["m", "i", "d"]
    assert behavioral(suite, case_outcomes(suite, good), None)["regressions"] == []


def test_shift_moves_content_and_fills_with_background() -> None:
    image = np.arange(9, dtype=np.float32).reshape(1, 3, 3)
    assert shift(image, 0, 1).tolist() == [[[0, 0, 1], [0, 3, 4], [0, 6, 7]]]
    assert shift(image, -1, 0).tolist() == [[[3, 4, 5], [6, 7, 8], [0, 0, 0]]]


def test_digits_suite_generates_prototypes_shifts_and_noise_from_the_data() -> None:
    data = load_digits()
    splits = make_splits(data.labels, 0)
    test = data.take(splits.test)
    suite = load_suite("digits", data.label_names, data, splits.train, test)
    types = [c.type for c in suite.cases]
    assert types.count("mft") == 10 and types.count("inv") == 20
    proto = next(c for c in suite.cases if c.id == "mft-prototype-3")
    train = np.asarray(splits.train)
    expected = data.inputs[train[data.labels[train] == 3]].mean(0)
    assert np.allclose(suite.inputs[proto.original], expected)
    # A model that predicts the mean image's class perfectly and is shift-invariant passes everything.
    probs = np.tile(np.eye(10)[0], (len(suite.inputs), 1))
    for c in suite.cases:
        if c.type == "mft":
            probs[c.original] = np.eye(10)[c.label]
    assert all(case_outcomes(suite, probs).values())
