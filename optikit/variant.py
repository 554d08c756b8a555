"""Variant: the immutable record of one model artifact and its lineage, saved as a directory with a manifest."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from optikit.data import DataSpec, Splits
from optikit.errors import ModelLoadError

MANIFEST = "variant.json"
SCHEMA_VERSION = 1
Format = Literal["torch", "hf", "onnx", "openvino"]
Origin = Literal["teacher", "import", "from_module"]
WEIGHT_FILES = {"torch": "model.safetensors", "hf": "config.json", "onnx": "model.onnx", "openvino": "model.xml"}


@dataclass(frozen=True)
class Step:
    """One pass applied: its name, its full config, and whether optikit inserted it for the user."""

    pass_name: str
    config: dict[str, Any]
    auto: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"pass": self.pass_name, "config": self.config, "auto": self.auto}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Step:
        return cls(d["pass"], dict(d.get("config") or {}), bool(d.get("auto", False)))

    def label(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in self.config.items() if not isinstance(v, (list, dict)) and v is not None)
        return f"{self.pass_name}:{opts}" if opts else self.pass_name


@dataclass(frozen=True)
class TaskInfo:
    """What the model serves: input kind, label names, and how inputs are prepared."""

    kind: Literal["image", "text"]
    label_names: tuple[str, ...]
    max_length: int = 128  # text only: truncation length; batches are padded to their own longest text

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "label_names": list(self.label_names), "max_length": self.max_length}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskInfo:
        return cls(d["kind"], tuple(d["label_names"]), int(d.get("max_length", 128)))


@dataclass(frozen=True)
class Variant:
    """One model artifact. Passes never change a Variant: they return a new one whose lineage is one step longer."""

    id: str
    name: str
    format: Format
    path: Path
    task: TaskInfo
    data: DataSpec
    splits: Splits
    parent: str | None = None
    lineage: tuple[Step, ...] = ()
    architecture: dict[str, Any] = field(default_factory=dict)  # torch format: registered builder + its kwargs
    report: dict[str, Any] = field(default_factory=dict)  # what the last pass measured about its own work
    versions: dict[str, str] = field(default_factory=dict)
    # Who made the root of the lineage: optikit (a teacher recipe) or the user (an import, an in-memory module).
    # Kept by every pass, because whether the test split can overlap the model's training data depends on it.
    origin: Origin = "teacher"

    def describe(self) -> str:
        return " → ".join(["teacher", *(s.label() for s in self.lineage)]) if self.lineage else "teacher"

    def to_dict(self, base: Path | None = None) -> dict[str, Any]:
        """The manifest; data paths are written relative to `base` (the variant folder) where that is shorter."""
        return {
            "schema": SCHEMA_VERSION,
            "id": self.id,
            "name": self.name,
            "parent": self.parent,
            "format": self.format,
            "lineage": [s.to_dict() for s in self.lineage],
            "task": self.task.to_dict(),
            "data": self.data.to_dict(base),
            "architecture": self.architecture,
            "report": self.report,
            "versions": self.versions,
            "splits": self.splits.to_dict(),
            "origin": self.origin,
        }

    def save_manifest(self, directory: Path | None = None) -> None:
        from optikit._io import write_json_atomic

        directory = directory or self.path
        write_json_atomic(directory / MANIFEST, self.to_dict(Path(directory).resolve()))

    def derive(self, *, id: str, name: str, format: Format, path: Path, step: Step, **changes: Any) -> Variant:
        """The child record of this variant after `step`."""
        return dataclasses.replace(self, id=id, name=name, format=format, path=path, parent=self.id,
                                   lineage=(*self.lineage, step), **{"report": {}, **changes})


_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]+")


def safe_name(text: str) -> str:
    """A model's name as it may appear in a folder name: anything but letters, digits and `_.+-` becomes `-`."""
    return _UNSAFE.sub("-", text)


def variant_id(*parts: Any) -> str:
    """A short content hash: the same inputs always name the same variant, which is what makes caching safe."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def load_variant(path: str | Path) -> Variant:
    """Reads a variant directory (its manifest), never unpickling anything."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelLoadError(f"model path {path} does not exist: pass a variant directory made by optikit "
                             "(optikit teach / compress) or a teacher name from `optikit teachers`")
    if path.is_file():
        raise ModelLoadError(f"{path} is a file: pass the variant directory that holds {MANIFEST}")
    manifest = path / MANIFEST
    if not manifest.is_file():
        raise ModelLoadError(f"{path} has no {MANIFEST}: pass a directory made by optikit teach or compress")
    try:
        d = json.loads(manifest.read_text(encoding="utf-8"))
        fmt = d["format"]
        variant = Variant(
            id=d["id"], name=d["name"], format=fmt, path=path.resolve(),
            task=TaskInfo.from_dict(d["task"]), data=DataSpec.from_dict(d["data"], path.resolve()),
            splits=Splits.from_dict(d["splits"]), parent=d.get("parent"),
            lineage=tuple(Step.from_dict(s) for s in d.get("lineage", [])),
            architecture=d.get("architecture") or {}, report=d.get("report") or {},
            versions=d.get("versions") or {}, origin=d.get("origin", "teacher"),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"{manifest} is not a valid optikit manifest ({type(exc).__name__}: {exc}): "
                             "recreate the variant with optikit compress") from None
    if fmt not in WEIGHT_FILES:
        raise ModelLoadError(f"{manifest} names unknown format {fmt!r}: expected torch, hf, onnx or openvino")
    weights = path / WEIGHT_FILES[fmt]
    if not weights.is_file():
        raise ModelLoadError(f"{path} has no {WEIGHT_FILES[fmt]}: the variant is incomplete; recreate it")
    return variant


def artifact_files(path: Path) -> list[Path]:
    """Every file of an artifact except the manifest, for size accounting."""
    return sorted(p for p in path.rglob("*") if p.is_file() and p.name != MANIFEST)


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("optikit", "torch", "transformers", "onnx", "onnxruntime", "optimum", "torch-pruning", "numpy",
                 "neural-compressor", "openvino", "nncf"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out
