"""Models: Hugging Face image classifiers load from safetensors only, the Encoder applies their normalisation, and
the any-size CNN and the pruned-HF rebuild produce the shapes they promise."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from optikit.errors import ModelLoadError
from optikit.models import (
    Encoder,
    build_architecture,
    copy_processor,
    hf_pruned,
    load_hf_classifier,
    torch_forward,
)
from optikit.variant import TaskInfo
from tests.image_helpers import IMAGENET_MEAN, IMAGENET_STD, save_tiny_resnet


@pytest.fixture(scope="module")
def resnet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_resnet(tmp_path_factory.mktemp("resnet") / "model")


def _image_variant(path: Path):
    """A stand-in with what Encoder reads: the task kind and the folder."""
    from types import SimpleNamespace

    return SimpleNamespace(task=TaskInfo("image", ("a", "b", "c")), path=path)


def test_image_kind_loads_an_image_classifier_whose_forward_gives_logits(resnet_dir: Path) -> None:
    module = load_hf_classifier(resnet_dir, kind="image").eval()
    assert type(module).__name__ == "ResNetForImageClassification"
    with torch.inference_mode():
        logits = torch_forward(module, {"pixel_values": torch.rand(2, 3, 32, 32)})
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 3)
    # A plain CNN's tensor comes back as it is.
    cnn = build_architecture({"name": "digits-cnn"})
    assert torch_forward(cnn, {"pixel_values": torch.rand(2, 1, 8, 8)}).shape == (2, 10)


def test_a_folder_with_only_a_pickle_is_refused_with_the_conversion(tmp_path: Path, resnet_dir: Path) -> None:
    for f in resnet_dir.iterdir():
        if f.suffix != ".safetensors":
            (tmp_path / f.name).write_bytes(f.read_bytes())
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x02 pickled")
    with pytest.raises(ModelLoadError) as exc:
        load_hf_classifier(tmp_path, kind="image")
    text = str(exc.value)
    assert "\n" not in text and "save_pretrained(dir, safe_serialization=True)" in text


def test_encoder_normalises_with_the_processor_mean_and_std(resnet_dir: Path) -> None:
    pixels = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
    out = Encoder(_image_variant(resnet_dir)).encode(pixels)["pixel_values"]
    mean = np.array(IMAGENET_MEAN, dtype=np.float32)[None, :, None, None]
    std = np.array(IMAGENET_STD, dtype=np.float32)[None, :, None, None]
    np.testing.assert_allclose(out, (pixels - mean) / std, rtol=1e-6)
    assert out.dtype == np.float32 and out.flags["C_CONTIGUOUS"]
    # The value a transformers processor gives pixel 1.0 of the red channel: (1 - 0.485) / 0.229.
    assert out[0, 0].max() <= (1 - 0.485) / 0.229 + 1e-5


def test_encoder_passes_pixels_through_without_a_processor_or_with_normalisation_off(tmp_path: Path) -> None:
    pixels = np.random.default_rng(1).random((3, 1, 8, 8)).astype(np.float32)
    out = Encoder(_image_variant(tmp_path)).encode(pixels)["pixel_values"]
    assert out.tobytes() == pixels.tobytes()  # digits: byte-identical to what it always was
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(
        {"do_normalize": False, "image_mean": [0.5], "image_std": [0.5]}))
    assert Encoder(_image_variant(tmp_path)).encode(pixels)["pixel_values"].tobytes() == pixels.tobytes()
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5, 0.5, 0.5],
                                                                   "image_std": [0.5, 0.5, 0.5]}))
    with pytest.raises(ModelLoadError, match="3 values but the images have 1 channels"):
        Encoder(_image_variant(tmp_path)).encode(pixels)


def test_copy_processor_carries_the_preprocessor_config(tmp_path: Path, resnet_dir: Path) -> None:
    copy_processor(resnet_dir, tmp_path)
    assert (tmp_path / "preprocessor_config.json").read_bytes() == (resnet_dir / "preprocessor_config.json").read_bytes()
    assert not (tmp_path / "config.json").exists()


@pytest.mark.parametrize(("channels", "size"), [(1, (8, 8)), (3, (32, 32)), (3, (50, 37))])
def test_image_cnn_takes_any_size_and_channel_count(channels: int, size: tuple[int, int]) -> None:
    module = build_architecture({"name": "image-cnn", "in_channels": channels, "num_classes": 4,
                                 "channels": [4, 8], "hidden": 16, "image_size": list(size)})
    assert module(torch.rand(2, channels, *size)).shape == (2, 4)


def test_hf_pruned_rebuilds_from_config_and_swaps_the_recorded_layers(resnet_dir: Path) -> None:
    source = load_hf_classifier(resnet_dir, kind="image")
    config = source.config.to_dict()
    plain = hf_pruned(json.loads(json.dumps(config)), {})  # what a manifest round trip gives
    assert {k: tuple(v.shape) for k, v in plain.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in source.state_dict().items()}
    narrow = hf_pruned(config, {"classifier.1": {"type": "Linear", "in_features": 16, "out_features": 3,
                                                 "bias": False}})
    assert narrow.classifier[1].bias is None
