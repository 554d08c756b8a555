"""Image folders: read in a fixed order into [0, 1] arrays of the model's size; every bad input is one DataError line."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from optikit.errors import DataError
from optikit.images import folder_digest, load_image_files, load_image_folder, model_image_spec
from tests.image_helpers import SHAPES, save_tiny_resnet, save_tiny_vit, write_shapes_folder


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_shapes_folder(tmp_path_factory.mktemp("img") / "shapes", per_class=4)


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_a_folder_reads_as_float_nchw_in_unit_range_in_sorted_order(shapes: Path) -> None:
    images, classes, paths = load_image_folder(shapes, None, 3)
    assert images.shape == (12, 3, 32, 32) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0 and images.max() > 0.5
    assert classes == [c for c in SHAPES for _ in range(4)]
    assert paths[:2] == ["circle/000.png", "circle/001.png"] and paths[-1] == "triangle/003.png"
    # Pixel (0, 0) of the first file, channel by channel, is what Pillow reads divided by 255.
    raw = np.asarray(Image.open(shapes / "circle" / "000.png").convert("RGB"), dtype=np.float32) / 255
    np.testing.assert_array_equal(images[0].transpose(1, 2, 0), raw)
    again = load_image_folder(shapes, None, 3)
    np.testing.assert_array_equal(images, again[0])


def test_size_resizes_and_one_channel_reads_grayscale(shapes: Path) -> None:
    images, _, _ = load_image_folder(shapes, (20, 24), 1)
    assert images.shape == (12, 1, 20, 24)
    files = load_image_files([shapes / "square" / "001.png", shapes / "circle" / "000.png"], (16, 16), 3)
    assert files.shape == (2, 3, 16, 16)
    single = load_image_files([shapes / "circle" / "000.png"], None, 3)
    np.testing.assert_array_equal(single[0], load_image_folder(shapes, None, 3)[0][0])


def test_mixed_sizes_without_a_model_size_name_both_sizes(tmp_path: Path) -> None:
    for name, size in (("a", (32, 32)), ("b", (40, 30))):
        (tmp_path / name).mkdir()
        Image.new("RGB", size).save(tmp_path / name / "x.png")
    with pytest.raises(DataError) as exc:
        load_image_folder(tmp_path, None, 3)
    assert "32×32" in _one_line(exc) and "40×30" in _one_line(exc) and "known input size" in _one_line(exc)
    assert load_image_folder(tmp_path, (32, 32), 3)[0].shape == (2, 3, 32, 32)


def test_bad_folders_are_one_line_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist") as exc:
        load_image_folder(tmp_path / "missing", None, 3)
    _one_line(exc)
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    (tmp_path / "empty" / "cat" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="no images found") as exc:
        load_image_folder(tmp_path / "empty", None, 3)
    _one_line(exc)
    Image.new("RGB", (8, 8)).save(tmp_path / "empty" / "cat" / "1.png")
    with pytest.raises(DataError, match="single class .'cat'.*at least two") as exc:
        load_image_folder(tmp_path / "empty", None, 3)
    _one_line(exc)
    (tmp_path / "empty" / "dog").mkdir()
    (tmp_path / "empty" / "dog" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=r"cannot read image .*dog/broken\.jpg") as exc:
        load_image_folder(tmp_path / "empty", None, 3)
    _one_line(exc)
    with pytest.raises(DataError, match="1 .grayscale. or 3"):
        load_image_files([tmp_path / "empty" / "cat" / "1.png"], None, 4)
    with pytest.raises(DataError, match="does not exist"):
        load_image_files([tmp_path / "nowhere.png"], None, 3)


def test_folder_digest_follows_image_bytes_and_names_only(tmp_path: Path) -> None:
    root = write_shapes_folder(tmp_path / "d", per_class=2)
    first = folder_digest(root)
    (root / "README.md").write_text("ignored by the loader, so by the digest")
    assert folder_digest(root) == first
    (root / "circle" / "001.png").rename(root / "circle" / "009.png")
    renamed = folder_digest(root)
    assert renamed != first
    Image.new("RGB", (32, 32), (1, 2, 3)).save(root / "circle" / "009.png")
    assert folder_digest(root) not in (first, renamed)


def test_model_image_spec_reads_processor_then_config(tmp_path: Path) -> None:
    assert model_image_spec(save_tiny_vit(tmp_path / "vit")) == ((32, 32), 3)
    assert model_image_spec(save_tiny_resnet(tmp_path / "resnet")) == ((32, 32), 3)
    folder = tmp_path / "custom"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"image_size": 48, "num_channels": 1}))
    assert model_image_spec(folder) == ((48, 48), 1)
    (folder / "preprocessor_config.json").write_text(json.dumps({"size": {"shortest_edge": 64},
                                                                 "crop_size": {"height": 56, "width": 60}}))
    assert model_image_spec(folder) == ((56, 60), 1)  # the processor crops: the crop is what the model sees
    (folder / "preprocessor_config.json").write_text(json.dumps({"size": 28, "do_center_crop": False,
                                                                 "crop_size": 20}))
    assert model_image_spec(folder) == ((28, 28), 1)
    (folder / "preprocessor_config.json").unlink()
    (folder / "config.json").write_text(json.dumps({"model_type": "resnet"}))
    assert model_image_spec(folder) == (None, 3)
