"""Models: architectures that torch-format variants are rebuilt from, input encoding, loading and saving weights."""
from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from optikit._bounds import available_memory_bytes, human_bytes
from optikit._registry import Registry
from optikit.errors import ModelLoadError

if TYPE_CHECKING:
    import torch.nn as nn

    from optikit.data import Dataset
    from optikit.variant import Variant

# Builders: name -> callable(**kwargs) -> nn.Module. Weights are stored as safetensors; the architecture is
# rebuilt from its recorded kwargs, so loading never unpickles.
architectures: Registry[Callable[..., Any]] = Registry("optikit.architectures", "architecture")

# Architecture key of a variant quantized by torch at load time (quantize:backend=torch). torch's quantized
# modules only serialize through pickle, so the variant keeps its fp32 weights and this recipe; dynamic
# quantization is a pure function of those weights, so every load rebuilds the same int8 model.
RUNTIME_QUANTIZATION = "runtime_quantization"

PIXEL_INPUT = "pixel_values"
PROCESSOR_CONFIG = "preprocessor_config.json"
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def digits_cnn(channels: Sequence[int] = (32, 64, 64), hidden: int = 128, num_classes: int = 10,
               image_size: int = 8, dropout: float = 0.0) -> nn.Module:
    """Three 3×3 conv layers and two dense layers: trains in seconds to ≥ 0.98 on 8×8 digits."""
    import torch.nn as nn

    c1, c2, c3 = channels
    side = image_size // 4
    return nn.Sequential(
        nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(),
        nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(dropout), nn.Linear(c3 * side * side, hidden), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )


def image_cnn(in_channels: int = 3, num_classes: int = 10, channels: Sequence[int] = (16, 32, 64), hidden: int = 64,
              pool: int = 2, image_size: int | Sequence[int] | None = None, dropout: float = 0.0) -> nn.Module:
    """A small CNN for any image size: 3×3 conv + ReLU + 2×2 max-pool per entry of `channels`, then adaptive
    average pooling to pool×pool, so the dense layers do not depend on the input size (`image_size` is recorded
    for the reader only). The conv / linear layout matches digits-cnn, so prune-structured rebuilds it the same way."""
    import torch.nn as nn

    del image_size  # informative: adaptive pooling makes the layers independent of it
    layers: list[nn.Module] = []
    previous = in_channels
    for width in channels:
        layers += [nn.Conv2d(previous, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True)]
        previous = width
    return nn.Sequential(
        *layers, nn.AdaptiveAvgPool2d(pool), nn.Flatten(), nn.Dropout(dropout),
        nn.Linear(previous * pool * pool, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes))


# Architecture key of a Hugging Face image classifier whose layers were narrowed by prune-structured: its config
# (one width per stage) cannot describe per-layer widths, so the variant records the config plus every changed
# layer's shape and is rebuilt by `hf_pruned`, weights from safetensors.
HF_PRUNED = "hf-pruned"
_RESHAPABLE = {"Conv2d": ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups"),
               "BatchNorm2d": ("num_features", "eps", "momentum", "affine", "track_running_stats"),
               "Linear": ("in_features", "out_features")}


def layer_shape(module: nn.Module) -> dict[str, Any] | None:
    """What rebuilds a Conv2d / BatchNorm2d / Linear of the same shape; None for other modules."""
    kind = type(module).__name__
    if kind not in _RESHAPABLE:
        return None
    spec: dict[str, Any] = {"type": kind}
    for key in _RESHAPABLE[kind]:
        value = getattr(module, key)
        spec[key] = list(value) if isinstance(value, tuple) else value
    if kind in ("Conv2d", "Linear"):
        spec["bias"] = module.bias is not None
    return spec


def _make_layer(spec: dict[str, Any]) -> nn.Module:
    import torch.nn as nn

    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.items() if k != "type"}
    return getattr(nn, spec["type"])(**kwargs)


def hf_pruned(config: dict[str, Any], shapes: dict[str, dict[str, Any]]) -> nn.Module:
    """A Hugging Face image classifier built from `config` with the layers named in `shapes` replaced by layers of
    the recorded shapes (weights are loaded afterwards, from safetensors)."""
    from transformers import AutoConfig, AutoModelForImageClassification

    settings = {k: v for k, v in config.items() if k != "transformers_version"}
    module = AutoModelForImageClassification.from_config(AutoConfig.for_model(**settings))
    for name, spec in shapes.items():
        owner, _, attr = name.rpartition(".")
        setattr(module.get_submodule(owner) if owner else module, attr, _make_layer(spec))
    return module.eval()


def build_architecture(spec: dict[str, Any]) -> nn.Module:
    spec = dict(spec)
    name = spec.pop("name")
    builder = architectures.get(name)
    require_memory_for(name, builder, spec)
    return builder(**spec)


def require_memory_for(name: str, builder: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    """Refuses, before anything is allocated, an architecture whose weights alone need more memory than is
    available. Its sizes come from a manifest or a recipe, so a wrong width would otherwise allocate until the
    machine swaps or the process is killed; built on torch's meta device, the module has shapes but no storage."""
    import torch

    try:
        with torch.device("meta"):
            shapes = builder(**kwargs)
        tensors = [*shapes.parameters(), *shapes.buffers()]
    except Exception:  # whatever the real build raises, it raises there, with its own message
        return
    needed = sum(t.numel() * t.element_size() for t in tensors)
    available = available_memory_bytes()
    if available is not None and needed > available:
        count = sum(t.numel() for t in tensors)
        raise ModelLoadError(f"architecture {name} needs {human_bytes(needed)} for its {count:,} weights, more than "
                             f"the {human_bytes(available)} of memory available: check its sizes (layer widths) in "
                             "the variant's manifest or the recipe")


def load_module(variant: Variant) -> nn.Module:
    """The torch module of a torch or hf variant, in eval mode (int8 if its manifest says to quantize it)."""
    recipe = variant.architecture.get(RUNTIME_QUANTIZATION)
    module = _load_fp32_module(variant)
    return apply_runtime_quantization(module, recipe) if recipe else module


def apply_runtime_quantization(module: nn.Module, recipe: dict[str, Any]) -> nn.Module:
    """Re-applies torch dynamic int8 quantization as recorded by quantize:backend=torch, or INC's PT2E static int8
    (quantize:backend=neural-compressor), which comes back compiled by torch.compile."""
    import torch

    if recipe.get("kind") == "inc-pt2e-static":
        import importlib.util

        if importlib.util.find_spec("neural_compressor") is None:
            from optikit.errors import MissingDependencyError

            raise MissingDependencyError("neural_compressor", "inc")
        from optikit._inc_runtime import rebuild

        return rebuild(module, recipe)
    if recipe.get("kind") != "torch-dynamic":
        raise ModelLoadError(f"unknown runtime quantization {recipe.get('kind')!r}: upgrade optikit")
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig

    qconfig = per_channel_dynamic_qconfig if recipe.get("per_channel") else default_dynamic_qconfig
    with warnings.catch_warnings():  # torch.ao.quantization is deprecated in favour of torchao (STACK.md)
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(module, {name: qconfig for name in recipe["modules"]},
                                                      dtype=torch.qint8).eval()


def _load_fp32_module(variant: Variant) -> nn.Module:
    if variant.format == "torch":
        from safetensors.torch import load_file

        module = build_architecture({k: v for k, v in variant.architecture.items() if k != RUNTIME_QUANTIZATION})
        try:
            state = load_file(str(variant.path / "model.safetensors"))
            module.load_state_dict(state)
        except Exception as exc:
            raise ModelLoadError(f"cannot read weights in {variant.path} ({type(exc).__name__}): "
                                 "the file is damaged or does not match its manifest; recreate the variant") from None
        return module.eval()
    if variant.format == "hf":
        return load_hf_classifier(variant.path, kind=variant.task.kind).eval()
    raise ModelLoadError(f"variant {variant.name} is {variant.format}, not a torch model: use an ONNX runner")


def load_hf_classifier(path: Path, num_labels: int | None = None, *, kind: str = "text", **kwargs: Any) -> nn.Module:
    """A Hugging Face classifier from a local save_pretrained folder: sequence classification for text tasks,
    image classification for image tasks. Safetensors only: a pickled pytorch_model.bin is never read."""
    from transformers import AutoModelForImageClassification, AutoModelForSequenceClassification

    path = Path(path)
    if not any(path.glob("*.safetensors")) and any(path.glob("pytorch_model*.bin")):
        raise ModelLoadError(f"{path} holds only pytorch_model.bin (pickle, which optikit never loads): convert it "
                             "once with model.save_pretrained(dir, safe_serialization=True)")
    auto = AutoModelForImageClassification if kind == "image" else AutoModelForSequenceClassification
    extra = {"num_labels": num_labels} if num_labels is not None else {}
    try:
        return auto.from_pretrained(str(path), local_files_only=True, use_safetensors=True, **extra, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load a Hugging Face {'image' if kind == 'image' else 'text'} classifier from "
                             f"{path}: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
                             ) from None


def save_module(module: nn.Module, variant_format: str, directory: Path, tokenizer_from: Path | None = None) -> None:
    """Writes weights the safe way: safetensors for torch, `save_pretrained` (safetensors) for hf."""
    if variant_format == "torch":
        from safetensors.torch import save_file

        state = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
        save_file(state, str(directory / "model.safetensors"))
    elif variant_format == "hf":
        module.save_pretrained(str(directory), safe_serialization=True)  # type: ignore[operator]
    else:
        raise ValueError(variant_format)
    if tokenizer_from is not None:
        copy_tokenizer(tokenizer_from, directory)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json",
                   "sentencepiece.bpe.model", "spiece.model", "merges.txt", "vocab.json", "added_tokens.json")
PROCESSOR_FILES = (PROCESSOR_CONFIG,)


def copy_processor(source: Path, target: Path) -> None:
    """Every variant carries its model's input preparation — a text model's tokenizer, an image model's
    preprocessor_config.json (its normalisation) — so an ONNX file or a distilled student is usable on its own."""
    import shutil

    for name in (*TOKENIZER_FILES, *PROCESSOR_FILES):
        if (Path(source) / name).is_file() and Path(source).resolve() != Path(target).resolve():
            shutil.copy2(Path(source) / name, Path(target) / name)


copy_tokenizer = copy_processor  # the older name, kept for callers


def image_normalization(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(mean, std) per channel from a variant's preprocessor_config.json, or None when inputs go in as they are.

    do_normalize defaults to true when the file gives an image_mean (transformers' processors do); the data is
    already scaled to [0, 1], which is what do_rescale (1/255) would have produced.
    """
    import json

    file = Path(path) / PROCESSOR_CONFIG
    if not file.is_file():
        return None
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ModelLoadError(f"cannot read {file} as JSON: restore it from the model's save_pretrained folder") from None
    mean, std = config.get("image_mean"), config.get("image_std")
    if not config.get("do_normalize", mean is not None) or mean is None:
        return None
    if std is None:
        raise ModelLoadError(f"{file} has image_mean but no image_std: add image_std or set do_normalize to false")
    mean_arr = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    std_arr = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    if mean_arr.shape != std_arr.shape or not np.all(std_arr > 0):
        raise ModelLoadError(f"{file}: image_mean and image_std must be equally long and std > 0; fix the file")
    return mean_arr, std_arr


class Encoder:
    """Turns examples into the named arrays a model takes; text batches pad to their own longest sequence."""

    def __init__(self, variant: Variant) -> None:
        self.kind = variant.task.kind
        self.max_length = variant.task.max_length
        self._tokenizer = None
        self._normalize = image_normalization(variant.path) if self.kind == "image" else None
        if self.kind == "text":
            from transformers import AutoTokenizer

            try:
                self._tokenizer = AutoTokenizer.from_pretrained(str(variant.path), local_files_only=True)
            except (OSError, ValueError) as exc:
                raise ModelLoadError(f"cannot load the tokenizer in {variant.path}: {str(exc).splitlines()[0]}") from None

    def encode(self, inputs: Any, pad_to: int | None = None) -> dict[str, np.ndarray]:
        if self.kind == "image":
            pixels = np.ascontiguousarray(inputs, dtype=np.float32)
            if self._normalize is not None:
                mean, std = self._normalize
                if mean.shape[1] not in (1, pixels.shape[1]):
                    raise ModelLoadError(f"the model's image_mean has {mean.shape[1]} values but the images have "
                                         f"{pixels.shape[1]} channels: load the images with the model's num_channels")
                pixels = np.ascontiguousarray((pixels - mean) / std, dtype=np.float32)
            return {PIXEL_INPUT: pixels}
        assert self._tokenizer is not None
        padding: bool | str = "max_length" if pad_to else "longest"
        enc = self._tokenizer(list(inputs), padding=padding, truncation=True,
                              max_length=pad_to or self.max_length, return_tensors="np")
        return {k: v.astype(np.int64) for k, v in enc.items() if k in TEXT_INPUTS}

    def batches(self, dataset: Dataset, batch_size: int, pad_to: int | None = None) -> list[dict[str, np.ndarray]]:
        out = []
        for start in range(0, len(dataset), batch_size):
            chunk = dataset.inputs[start:start + batch_size]
            out.append(self.encode(chunk, pad_to))
        return out


def torch_forward(module: nn.Module, feeds: dict[str, Any]) -> Any:
    """Calls a module with the encoder's arrays (as tensors) and returns its logits tensor."""
    if PIXEL_INPUT in feeds:
        out = module(feeds[PIXEL_INPUT])
        # Hugging Face image classifiers return an output object; plain CNNs return the logits tensor.
        return out.logits if hasattr(out, "logits") else out
    return module(**feeds).logits


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(parameters, non-zero parameters)."""
    total = nonzero = 0
    for p in module.parameters():
        total += p.numel()
        nonzero += int((p != 0).sum())
    return total, nonzero


architectures.register("digits-cnn", digits_cnn)
architectures.register("image-cnn", image_cnn)
architectures.register(HF_PRUNED, hf_pruned)
