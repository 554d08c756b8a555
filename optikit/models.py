"""Models: architectures that torch-format variants are rebuilt from, input encoding, loading and saving weights."""
from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

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


def build_architecture(spec: dict[str, Any]) -> nn.Module:
    spec = dict(spec)
    name = spec.pop("name")
    return architectures.get(name)(**spec)


def load_module(variant: Variant) -> nn.Module:
    """The torch module of a torch or hf variant, in eval mode (int8 if its manifest says to quantize it)."""
    recipe = variant.architecture.get(RUNTIME_QUANTIZATION)
    module = _load_fp32_module(variant)
    return apply_runtime_quantization(module, recipe) if recipe else module


def apply_runtime_quantization(module: nn.Module, recipe: dict[str, Any]) -> nn.Module:
    """Re-applies torch dynamic int8 quantization as recorded by quantize:backend=torch."""
    import torch

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
        return load_hf_classifier(variant.path).eval()
    raise ModelLoadError(f"variant {variant.name} is {variant.format}, not a torch model: use an ONNX runner")


def load_hf_classifier(path: Path, num_labels: int | None = None, **kwargs: Any) -> nn.Module:
    from transformers import AutoModelForSequenceClassification

    extra = {"num_labels": num_labels} if num_labels is not None else {}
    try:
        return AutoModelForSequenceClassification.from_pretrained(str(path), local_files_only=True, **extra, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load a Hugging Face classifier from {path}: {str(exc).splitlines()[0]}") from None


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


def copy_tokenizer(source: Path, target: Path) -> None:
    """Every variant of a text model carries its tokenizer, so an ONNX file is usable on its own."""
    import shutil

    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)


class Encoder:
    """Turns examples into the named arrays a model takes; text batches pad to their own longest sequence."""

    def __init__(self, variant: Variant) -> None:
        self.kind = variant.task.kind
        self.max_length = variant.task.max_length
        self._tokenizer = None
        if self.kind == "text":
            from transformers import AutoTokenizer

            try:
                self._tokenizer = AutoTokenizer.from_pretrained(str(variant.path), local_files_only=True)
            except (OSError, ValueError) as exc:
                raise ModelLoadError(f"cannot load the tokenizer in {variant.path}: {str(exc).splitlines()[0]}") from None

    def encode(self, inputs: Any, pad_to: int | None = None) -> dict[str, np.ndarray]:
        if self.kind == "image":
            return {PIXEL_INPUT: np.ascontiguousarray(inputs, dtype=np.float32)}
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
        return module(feeds[PIXEL_INPUT])
    return module(**feeds).logits


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(parameters, non-zero parameters)."""
    total = nonzero = 0
    for p in module.parameters():
        total += p.numel()
        nonzero += int((p != 0).sum())
    return total, nonzero


architectures.register("digits-cnn", digits_cnn)
