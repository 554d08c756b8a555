"""Size: bytes on disk of every artifact file, parameters, non-zero parameters, and compressed bytes."""
from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from optikit.variant import Variant, artifact_files

# .xml: an OpenVINO IR's graph, counted with its .bin as a .onnx file's graph is counted with its weights.
WEIGHT_SUFFIXES = {".safetensors", ".onnx", ".bin", ".data", ".xml"}


@dataclass(frozen=True)
class Size:
    bytes_on_disk: int  # every file of the artifact (weights, tokenizer, config), not the manifest
    weight_bytes: int  # the weight files alone
    compressed_bytes: int  # the weight files deflated (zlib level 6): where unstructured sparsity shows
    parameters: int
    nonzero_parameters: int
    embedding_parameters: int
    files: dict[str, int] = field(default_factory=dict)

    @property
    def embedding_share(self) -> float:
        return self.embedding_parameters / self.parameters if self.parameters else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "embedding_share": self.embedding_share}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Size:
        on_disk = int(d["bytes_on_disk"])
        weights = int(d.get("weight_bytes", on_disk))
        return cls(on_disk, weights, int(d.get("compressed_bytes", weights)), int(d.get("parameters", 0)),
                   int(d.get("nonzero_parameters", d.get("parameters", 0))), int(d.get("embedding_parameters", 0)),
                   {str(k): int(v) for k, v in (d.get("files") or {}).items()})


def _compressed(path: Path) -> int:
    compressor = zlib.compressobj(6)
    total = 0
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            total += len(compressor.compress(chunk))
    return total + len(compressor.flush())


def _tensors(variant: Variant) -> dict[str, np.ndarray]:
    if variant.format == "onnx":
        import onnx
        from onnx import numpy_helper

        model = onnx.load(str(variant.path / "model.onnx"))
        return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    if variant.format == "openvino":
        return _openvino_constants(variant.path / "model.xml")
    from safetensors.numpy import load_file

    out: dict[str, np.ndarray] = {}
    for f in sorted(variant.path.glob("*.safetensors")):
        try:
            out.update(load_file(str(f)))
        except (TypeError, ValueError):  # bf16 tensors have no numpy dtype: count them through torch
            from safetensors.torch import load_file as load_torch

            out.update({k: v.float().numpy() for k, v in load_torch(str(f)).items()})
    return out


def _openvino_constants(xml: Path) -> dict[str, np.ndarray]:
    """The IR's float and 8-bit constants; integer shapes and indices (int32/int64) are graph plumbing."""
    import openvino as ov

    out: dict[str, np.ndarray] = {}
    for op in ov.Core().read_model(str(xml)).get_ordered_ops():
        if op.get_type_name() == "Constant" and op.get_element_type().get_type_name() not in ("i32", "i64"):
            # Friendly names (the source's, where "embed" shows) may repeat; the op's own name may not.
            out[f"{op.get_friendly_name()}|{op.get_name()}"] = op.get_data()
    return out


def measure_size(variant: Variant) -> Size:
    files = {str(p.relative_to(variant.path)): p.stat().st_size for p in artifact_files(variant.path)}
    weights = [variant.path / name for name in files if Path(name).suffix in WEIGHT_SUFFIXES]
    tensors = _tensors(variant)
    # Scales and zero points of quantized graphs are bookkeeping, not parameters; count float and int8 weights.
    params = {k: v for k, v in tensors.items() if v.ndim >= 1 and v.size > 1}
    parameters = int(sum(v.size for v in params.values()))
    nonzero = int(sum(np.count_nonzero(v) for v in params.values()))
    embedding = int(sum(v.size for k, v in params.items() if "embed" in k.lower()))
    return Size(sum(files.values()), sum(p.stat().st_size for p in weights), sum(_compressed(p) for p in weights),
                parameters, nonzero, embedding, files)
