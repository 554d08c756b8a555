"""ServedModel: a variant loaded once answers raw examples with softmax probabilities, and refuses what it cannot take."""
from __future__ import annotations

import numpy as np
import pytest

from optikit.data import load_digits
from optikit.runners import load_runner
from optikit.serve.models import InputError, ServedModel, expected_image_shape


@pytest.fixture(scope="module")
def served_digits(digits_teacher) -> ServedModel:
    return ServedModel(digits_teacher, threads=1)


def digits_images(count: int) -> list[list]:
    return load_digits().inputs[:count].tolist()


def test_served_model_predicts_the_runners_labels_with_probabilities(served_digits, digits_teacher) -> None:
    images = digits_images(16)
    predictions, ms = served_digits.predict(images)
    logits = load_runner(digits_teacher, 1).logits({"pixel_values": np.asarray(images, dtype=np.float32)})
    assert [p.label for p in predictions] == logits.argmax(axis=1).tolist()
    for p in predictions:
        assert len(p.probs) == 10
        assert sum(p.probs) == pytest.approx(1.0, abs=1e-6)
        assert p.label == int(np.argmax(p.probs))
        assert p.ms == ms
    assert ms > 0


def test_served_model_knows_the_digits_input_shape(served_digits) -> None:
    assert served_digits.image_shape == (1, 8, 8)
    assert expected_image_shape(served_digits.variant) == (1, 8, 8)


@pytest.mark.parametrize("example", [
    [[0.0] * 8] * 8,          # no channel axis
    [[[0.0] * 7] * 8],        # one column short
    "a digit",                # text to an image model
])
def test_served_model_refuses_a_wrong_image_in_one_line_naming_the_shape(served_digits, example) -> None:
    with pytest.raises(InputError) as caught:
        served_digits.check([digits_images(1)[0], example])
    message = str(caught.value)
    assert "\n" not in message
    assert "1×8×8" in message
    assert "input 1" in message


def test_served_model_refuses_non_finite_pixels(served_digits) -> None:
    image = digits_images(1)[0]
    image[0][0][0] = float("nan")
    with pytest.raises(InputError, match="finite"):
        served_digits.check([image])


def test_served_onnx_variant_gives_the_torch_labels(digits_teacher, variants_dir) -> None:
    from optikit.api import compress

    onnx = ServedModel(compress(digits_teacher, ["export-onnx"], out=variants_dir, threads=1), threads=1)
    torch_model = ServedModel(digits_teacher, threads=1)
    images = digits_images(32)
    assert [p.label for p in onnx.predict(images)[0]] == [p.label for p in torch_model.predict(images)[0]]
    assert onnx.image_shape == (1, 8, 8)


def test_served_text_model_takes_strings_and_refuses_anything_else(text_teacher) -> None:
    served = ServedModel(text_teacher, threads=1)
    predictions, _ = served.predict(["image segmentation with a camera", "kubernetes deployment pipeline"])
    assert [len(p.probs) for p in predictions] == [3, 3]
    with pytest.raises(InputError, match="input 1 is int.*takes text"):
        served.check(["fine", 3])
