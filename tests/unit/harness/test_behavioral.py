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
    assert rec.pass_rate == 0.0 and rec.by_type == {"mft": 0.0, "inv": 0.0, "dir": 0.0}
    assert [r.id for r in rec.regressions] == ["m", "i", "d"]
    assert behavioral(suite, case_outcomes(suite, good), None).regressions == ()


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


# The digits suite as the code before the generic image suite generated it (seed 0 splits): ids in order and a
# checksum of its inputs rounded to 5 decimals. Generalising the generator must not move a single case.
DIGITS_FIRST_IDS = ["mft-prototype-0", "mft-prototype-1", "mft-prototype-2", "mft-prototype-3", "mft-prototype-4",
                    "mft-prototype-5", "mft-prototype-6", "mft-prototype-7", "mft-prototype-8", "mft-prototype-9",
                    "inv-shift-298", "inv-shift-292"]
DIGITS_INPUTS_SHA256 = "f6ea2d0abd8cccf4"


def test_digits_suite_is_unchanged_by_the_generic_image_suite() -> None:
    import hashlib

    data = load_digits()
    splits = make_splits(data.labels, 0)
    suite = load_suite("digits", data.label_names, data, splits.train, data.take(splits.test))
    assert [c.id for c in suite.cases][:12] == DIGITS_FIRST_IDS and len(suite.cases) == 30
    assert not any("brightness" in c.id for c in suite.cases)
    assert hashlib.sha256(np.round(suite.inputs, 5).tobytes()).hexdigest()[:16] == DIGITS_INPUTS_SHA256
    assert auto_suite("image", data.label_names, "digits") == "digits"


def _shapes(tmp_path: Path):
    from tests.image_helpers import folder_dataset, write_shapes_folder

    data = folder_dataset(write_shapes_folder(tmp_path / "shapes", per_class=12))
    splits = make_splits(data.labels, 0)
    return data, splits


def test_any_image_task_gets_shift_noise_and_brightness_cases_on_clipped_pixels(tmp_path: Path) -> None:
    data, splits = _shapes(tmp_path)
    test = data.take(splits.test)
    spec = auto_suite("image", data.label_names, "imagefolder")
    assert spec == "images"
    suite = load_suite(spec, data.label_names, data, splits.train, test)
    kinds = {prefix: [c for c in suite.cases if c.id.startswith(prefix)]
             for prefix in ("mft-prototype", "inv-shift", "inv-noise", "inv-brightness")}
    assert {k: len(v) for k, v in kinds.items()} == {"mft-prototype": 3, "inv-shift": len(test),
                                                     "inv-noise": len(test), "inv-brightness": len(test)}
    assert suite.inputs.shape[1:] == (3, 32, 32) and suite.inputs.dtype == np.float32
    assert suite.inputs.min() >= 0.0 and suite.inputs.max() <= 1.0
    bright = kinds["inv-brightness"][0]
    original = suite.inputs[bright.original]
    np.testing.assert_allclose(suite.inputs[bright.perturbed[0]], original * 0.8, rtol=1e-6)
    np.testing.assert_allclose(suite.inputs[bright.perturbed[1]], np.clip(original * 1.2, 0, 1), rtol=1e-6)
    moved = kinds["inv-shift"][0]  # 3% of 32 pixels rounds to 1: a one-pixel shift, background filled
    np.testing.assert_array_equal(suite.inputs[moved.perturbed[0]], shift(suite.inputs[moved.original], 0, -1))
    # A model blind to every perturbation passes every INV case; flipping one brightness copy fails exactly it.
    probs = np.tile([1.0, 0.0, 0.0], (len(suite.inputs), 1))
    assert all(v for k, v in case_outcomes(suite, probs).items() if k.startswith("inv"))
    probs[bright.perturbed[1]] = [0.0, 1.0, 0.0]
    failed = [k for k, v in case_outcomes(suite, probs).items() if not v and k.startswith("inv")]
    assert failed == [bright.id]


def test_prototypes_are_left_out_where_class_means_do_not_represent_classes(tmp_path: Path) -> None:
    from optikit.data import Dataset
    from optikit.harness.behavioral import centroid_accuracy

    data, splits = _shapes(tmp_path)
    train = np.asarray(splits.train)
    assert centroid_accuracy(data.inputs[train], data.labels[train], 3) >= 0.75  # images.toml: 0.75
    # Random pixels with random labels: the class means are alike, so a prototype says nothing about its class.
    noise = np.random.default_rng(0).random(data.inputs.shape, dtype=np.float32)
    shuffled = Dataset("image", noise, np.random.default_rng(1).permutation(data.labels), data.label_names, data.spec)
    assert centroid_accuracy(noise[train], shuffled.labels[train], 3) < 0.75
    suite = load_suite("images", data.label_names, shuffled, splits.train, shuffled.take(splits.test))
    assert not any(c.type == "mft" for c in suite.cases) and suite.cases


def test_an_image_suite_with_an_unknown_prototypes_value_is_a_config_error(tmp_path: Path) -> None:
    data, splits = _shapes(tmp_path)
    path = tmp_path / "bad.toml"
    path.write_text('[suite]\nname = "bad"\n[generate]\nprototypes = "sometimes"\n')
    with pytest.raises(ConfigError, match="prototypes must be true, false or \"auto\""):
        load_suite(str(path), data.label_names, data, splits.train, data.take(splits.test))


@pytest.mark.parametrize(("text", "message"), [
    ("", r"holds no cases: add \[\[case\]\] tables"),
    ("# only a comment\n", r"holds no cases: add \[\[case\]\] tables"),
    ("[suite]\nname = \"empty\"\n", r"holds no cases: add \[\[case\]\] tables"),
    ("suite = \"x\"\n[[case]]\nid = \"m\"\n", r"must be a table and each case a \[\[case\]\] table"),
    ("case = 3\n", r"must be a table and each case a \[\[case\]\] table"),
    ("case = [1, 2]\n", r"must be a table and each case a \[\[case\]\] table"),
])
def test_an_empty_or_misshapen_suite_file_is_one_config_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "suite.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as caught:
        load_suite(str(path), ("a", "b"))
    assert "\n" not in str(caught.value)
