"""Importing the user's own classifier: whatever lies on disk becomes a baseline Variant, with no teach step.

Detected from what is on disk, in this order:
- an optikit variant directory (`variant.json`): used as it is;
- a Hugging Face `save_pretrained` folder of a sequence or image classifier (safetensors weights, with its
  tokenizer or image processor), or a hub-cache snapshot of one found offline (`org/name`, or the
  `models--org--name` folder): never a download;
- an ONNX model: a `.onnx` file or a folder holding one (optimum exports included), inputs and outputs read from
  the graph.

The import copies the model's files into `$OPTIKIT_HOME/imports/NAME-ID` (a copy, not a reference: the variant
stays usable when the user's folder moves or changes, and nothing in the user's folder is ever written). ID hashes
the model's bytes together with the data, its split rule and the label names, so importing the same model on the
same data twice reuses the first import.
"""
from __future__ import annotations

import json
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from optikit.config import require
from optikit.data import Dataset, DataSpec, load_data, repoint, splits_for
from optikit.datafiles import file_sha256
from optikit.errors import ConfigError, ModelLoadError
from optikit.models import TOKENIZER_FILES
from optikit.variant import MANIFEST, TaskInfo, Variant, library_versions, load_variant, safe_name, variant_id

ModelKind = Literal["variant", "hf", "onnx"]
PROCESSOR_FILES = ("preprocessor_config.json", "image_processor_config.json")
HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
TEXT_INPUTS = frozenset({"input_ids", "attention_mask", "token_type_ids"})
IMAGE_INPUT = "pixel_values"
MAX_LENGTH_CAP = 512  # a tokenizer's model_max_length is often a sentinel (1e30); BERT-style models stop at 512


@dataclass(frozen=True)
class DataOptions:
    """The user's evaluation data, as given on the command line or to the API."""

    data: str | None = None
    test_data: str | None = None
    split_col: str | None = None
    text_cols: tuple[str, ...] = ()
    label_col: str | None = None
    image_col: str | None = None
    labels: tuple[str, ...] = ()  # label names for a model whose config has none, in output order
    seed: int = 0

    def __post_init__(self) -> None:
        require(not (self.test_data and self.split_col),
                "--test-data and --split-col both name the test set: pass one of them")
        require(not (self.text_cols and self.image_col), "--text-cols and --image-col: a table is text or images, "
                "pass one of them")
        require(len(set(self.labels)) == len(self.labels), f"--labels repeats a name: {', '.join(self.labels)}")

    @property
    def given(self) -> bool:
        return any((self.data, self.test_data, self.split_col, self.text_cols, self.label_col, self.image_col))

    @classmethod
    def from_spec(cls, spec: DataSpec, seed: int, labels: Sequence[str] = ()) -> DataOptions:
        """The options that reproduce a variant's data (for a raw model benched beside variants made from it)."""
        return cls(spec.path, spec.test_path, spec.split_col, spec.text_cols, spec.label_col, spec.image_col,
                   tuple(labels), seed)


@dataclass(frozen=True)
class Detected:
    """What lies at a model path: its kind, the folder or file to read, and (hf/onnx) the task it serves."""

    kind: ModelKind
    path: Path
    onnx_file: Path | None = None

    @property
    def format(self) -> str:
        if self.kind == "variant":
            return json.loads((self.path / MANIFEST).read_text(encoding="utf-8")).get("format", "")
        return self.kind


def _hub_snapshot(text: str) -> Path | None:
    """An `org/name` repo id or a `models--org--name` cache folder → its snapshot folder, found offline only."""
    path = Path(text).expanduser()
    if path.is_dir() and path.name.startswith("models--") and (path / "snapshots").is_dir():
        ref = path / "refs" / "main"
        snapshots = sorted((path / "snapshots").iterdir())
        if ref.is_file() and (path / "snapshots" / ref.read_text().strip()).is_dir():
            return path / "snapshots" / ref.read_text().strip()
        return snapshots[-1] if snapshots else None
    if re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", text) and not path.exists():
        from huggingface_hub import snapshot_download

        try:  # local_files_only: the cache or nothing, whatever HF_HUB_OFFLINE says
            return Path(snapshot_download(text, local_files_only=True))
        except Exception:
            return None
    return None


def detect(model: str | Path) -> Detected:
    """What `model` is, from what is on disk; one ModelLoadError line when optikit cannot take it."""
    text = str(model)
    snapshot = _hub_snapshot(text)
    path = snapshot or Path(text).expanduser()
    if not path.exists():
        raise ModelLoadError(f"model {text} does not exist: pass a Hugging Face save_pretrained folder, an .onnx file "
                             "or folder, an optikit variant directory, a cached hub id (org/name), or a teacher name "
                             "from `optikit teachers`")
    if path.is_file():
        if path.suffix.lower() == ".onnx":
            return Detected("onnx", path.parent, path)
        raise ModelLoadError(f"{path} is a {path.suffix or 'plain'} file: pass an .onnx file or the folder that holds "
                             "the model (config.json and model.safetensors)")
    if (path / MANIFEST).is_file():
        return Detected("variant", path)
    if (path / "config.json").is_file() and any((path / w).is_file() for w in HF_WEIGHTS):
        return Detected("hf", path)
    onnx_files = sorted(path.glob("*.onnx"))
    if onnx_files:
        chosen = path / "model.onnx" if (path / "model.onnx").is_file() else None
        if chosen is None and len(onnx_files) > 1:
            raise ModelLoadError(f"{path} holds several ONNX files ({', '.join(p.name for p in onnx_files)}): pass "
                                 "the one to use")
        return Detected("onnx", path, chosen or onnx_files[0])
    if (path / "config.json").is_file() and any(path.glob("*.bin")):
        raise ModelLoadError(f"{path} has only pickled weights (*.bin), which optikit never loads: convert them once "
                             "with model.save_pretrained(DIR, safe_serialization=True) and pass DIR")
    raise ModelLoadError(f"{path} holds no model optikit can read: expected config.json with model.safetensors, an "
                         f".onnx file, or {MANIFEST}")


def _config(path: Path) -> dict[str, Any]:
    file = path / "config.json"
    if not file.is_file():
        return {}
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ModelLoadError(f"{file} is not valid JSON ({exc}): fix or re-save the model") from None


def id2label_names(id2label: Any, where: str) -> tuple[str, ...]:
    """A config's own label names in output (index) order; empty when it has none or only generic `LABEL_i`."""
    id2label = dict(id2label or {})
    try:
        names = tuple(str(id2label[k]) for k in sorted(id2label, key=int))
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: id2label has non-integer keys {list(id2label)}: fix its config") from None
    return () if all(re.fullmatch(r"LABEL_\d+", n) for n in names) else names


def label_names_of(config: dict[str, Any], given: Sequence[str], where: str, outputs: int | None = None) -> tuple[str, ...]:
    """The model's label names in output order: its id2label, else --labels; the two must agree when both exist."""
    names = id2label_names(config.get("id2label"), where)
    if names:
        if given and tuple(given) != names:
            raise ConfigError(f"--labels {list(given)} differ from {where}'s id2label {list(names)}: drop --labels "
                              "(the model's names are used) or fix the model's config")
        return names
    count = len(config.get("id2label") or {}) or outputs
    if not given:
        raise ConfigError(f"{where} has no label names{f' ({count} outputs)' if count else ''}: pass them in output "
                          "order with --labels a,b,c")
    if count and len(given) != count:
        raise ConfigError(f"--labels names {len(given)} labels but {where} has {count} outputs: name each output once, "
                          "in order")
    return tuple(given)


def _hf_task(config: dict[str, Any], where: str) -> Literal["text", "image"]:
    archs = config.get("architectures") or []
    if any(a.endswith("ForSequenceClassification") for a in archs):
        return "text"
    if any(a.endswith("ForImageClassification") for a in archs):
        return "image"
    raise ConfigError(f"{where} is not a sequence or image classifier (architectures: {archs or 'none'}): optikit "
                      "compresses classifiers (…ForSequenceClassification, …ForImageClassification)")


def _max_length(path: Path) -> int:
    tok = path / "tokenizer_config.json"
    if tok.is_file():
        length = json.loads(tok.read_text(encoding="utf-8")).get("model_max_length")
        if isinstance(length, int | float) and 2 <= length <= MAX_LENGTH_CAP:
            return int(length)
    return MAX_LENGTH_CAP if tok.is_file() else 128


def _has_tokenizer(path: Path) -> bool:
    return (path / "tokenizer.json").is_file() or (path / "vocab.txt").is_file() or (path / "spiece.model").is_file()


@dataclass(frozen=True)
class _Graph:
    inputs: dict[str, list[Any]]
    outputs: int | None  # the logits' last dimension when the graph fixes it
    external: tuple[str, ...]  # external-data files the graph references


def _read_graph(file: Path) -> _Graph:
    import onnx

    try:
        model = onnx.load(str(file), load_external_data=False)
    except Exception as exc:
        raise ModelLoadError(f"{file} is not a readable ONNX model ({type(exc).__name__}): re-export it") from None
    initializers = {i.name for i in model.graph.initializer}
    inputs = {i.name: [d.dim_value if d.HasField("dim_value") else d.dim_param for d in i.type.tensor_type.shape.dim]
              for i in model.graph.input if i.name not in initializers}
    outputs = None
    if model.graph.output:
        dims = model.graph.output[0].type.tensor_type.shape.dim
        if dims and dims[-1].HasField("dim_value"):
            outputs = int(dims[-1].dim_value)
    external = {e.value for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL
                for e in t.external_data if e.key == "location"}
    return _Graph(inputs, outputs, tuple(sorted(external)))


def _onnx_task(graph: _Graph, file: Path) -> Literal["text", "image"]:
    names = set(graph.inputs)
    if "input_ids" in names and names <= TEXT_INPUTS:
        return "text"
    if names == {IMAGE_INPUT}:
        return "image"
    raise ConfigError(f"{file.name} takes inputs {sorted(names)}: optikit feeds text models input_ids, attention_mask "
                      "(and token_type_ids) and image models pixel_values; export with those names (optimum-cli "
                      "export onnx does)")


@dataclass(frozen=True)
class _Model:
    """What an import copies and what it knows before reading any data."""

    kind: Literal["hf", "onnx"]
    task: Literal["text", "image"]
    source: Path
    files: tuple[tuple[Path, str], ...]  # (file in the user's folder, name in the variant)
    label_names: tuple[str, ...]
    name: str
    max_length: int
    image_size: tuple[int, int] | None
    channels: int


def inspect_model(found: Detected, labels: Sequence[str] = ()) -> _Model:
    """Reads (never writes) the user's model folder: what to copy, the task, the label names, the input size."""
    path = found.path
    config = _config(path)
    side = [path / n for n in (*TOKENIZER_FILES, *PROCESSOR_FILES, "config.json") if (path / n).is_file()]
    name = safe_name(str(config.get("_name_or_path") or "").rstrip("/").split("/")[-1] or path.name) or "model"
    if found.kind == "hf":
        where = f"model {path}"
        task = _hf_task(config, where)
        weights = sorted({*path.glob("model*.safetensors"), *[path / w for w in HF_WEIGHTS if (path / w).is_file()]})
        names = label_names_of(config, labels, where, config.get("num_labels"))
        size, channels = _image_spec(path, None) if task == "image" else (None, 1)
        copied = tuple((f, f.name) for f in [*weights, *side])
        return _Model("hf", task, path, copied, names, name, _max_length(path), size, channels)
    assert found.onnx_file is not None
    graph = _read_graph(found.onnx_file)
    task = _onnx_task(graph, found.onnx_file)
    names = label_names_of(config, labels, f"model {found.onnx_file}", graph.outputs)
    if task == "text" and not _has_tokenizer(path):
        raise ConfigError(f"{found.onnx_file.name} is a text model but {path} holds no tokenizer: put its tokenizer "
                          "files (tokenizer.json or vocab.txt) beside it")
    missing = [e for e in graph.external if not (path / e).is_file()]
    if missing:
        raise ModelLoadError(f"{found.onnx_file.name} references external data {missing} that is not beside it: "
                             "copy those files next to it")
    files: list[tuple[Path, str]] = [(found.onnx_file, "model.onnx"), *((path / e, e) for e in graph.external),
                                     *((f, f.name) for f in side)]
    size, channels = _image_spec(path, graph.inputs.get(IMAGE_INPUT)) if task == "image" else (None, 1)
    if not config.get("_name_or_path"):
        name = safe_name(found.onnx_file.stem if found.onnx_file.stem != "model" else path.name)
    return _Model("onnx", task, path, tuple(files), names, name, _max_length(path), size, channels)


def _image_spec(path: Path, dims: list[Any] | None) -> tuple[tuple[int, int] | None, int]:
    """The model's input size and channels: a fixed ONNX input shape, else its image processor / config."""
    if dims and len(dims) == 4 and all(isinstance(d, int) and d > 0 for d in dims[1:]):
        return (int(dims[2]), int(dims[3])), int(dims[1])
    from optikit.images import model_image_spec

    size, channels = model_image_spec(path)
    if dims and len(dims) == 4 and isinstance(dims[1], int) and dims[1] > 0:
        channels = int(dims[1])
    return size, channels


def _model_digest(files: Sequence[tuple[Path, str]]) -> str:
    import hashlib

    digest = hashlib.sha256()
    for source, name in sorted(files, key=lambda f: f[1]):
        digest.update(name.encode() + b"\0" + file_sha256(source).encode())
    return digest.hexdigest()


def model_data(model: _Model, options: DataOptions) -> Dataset:
    """The user's data, read for this model: its label order, its input size."""
    if not options.data:
        raise ConfigError("a model optikit did not make needs the data to measure it on: pass --data FILE (and "
                          "--text-cols/--label-col for a table, --test-data FILE for your own test set)")
    dataset = load_data(options.data, text_cols=options.text_cols, label_col=options.label_col,
                        image_col=options.image_col, label_names=model.label_names, test_path=options.test_data,
                        split_col=options.split_col, image_size=model.image_size, channels=model.channels)
    if dataset.kind != model.task:
        raise ConfigError(f"{model.source} is a {model.task} classifier but {options.data} holds {dataset.kind} "
                          f"examples: pass {'--text-cols' if model.task == 'text' else 'an image folder or --image-col'}")
    return dataset


def import_model(model: str | Path, options: DataOptions, *, home: Path | None = None) -> Variant:
    """The user's model as a baseline Variant (copied and content-addressed; their files are only read)."""
    from optikit._io import atomic_directory
    from optikit.teach import optikit_home

    found = detect(model)
    if found.kind == "variant":
        variant = load_variant(found.path)
        return with_data(variant, options) if options.given else variant
    spec = inspect_model(found, options.labels)
    dataset = model_data(spec, options)
    splits = splits_for(dataset, options.seed)
    digest = _model_digest(spec.files)
    vid = variant_id("import", digest, dataset.spec.key, dataset.spec.text_cols, dataset.spec.label_col,
                     dataset.spec.image_col, splits.rule, options.seed, spec.label_names, spec.max_length)
    target = (home or optikit_home() / "imports") / f"{spec.name}-{vid}"
    if (target / MANIFEST).is_file():  # the same bytes on the same data: reuse it, with the data where it is now
        return replace(load_variant(target), data=dataset.spec)
    with atomic_directory(target, replace=True) as tmp:
        for source, name in spec.files:
            shutil.copyfile(source, tmp / name)  # copyfile: the user's permissions and times are theirs
        Variant(id=vid, name=spec.name, format=spec.kind, path=tmp, task=TaskInfo(spec.task, spec.label_names,
                spec.max_length), data=dataset.spec, splits=splits, versions=library_versions(), origin="import",
                report={"source": "import", "imported_from": str(found.onnx_file or found.path),
                        "model_sha256": digest, "data_notes": list(dataset.notes)}).save_manifest(tmp)
    return load_variant(target)


def with_data(variant: Variant, options: DataOptions) -> Variant:
    """A variant re-pointed at its data in a new place (a moved variant); the content hash must match."""
    if options.split_col and options.split_col != variant.data.split_col:
        raise ConfigError(f"{variant.name} was split by its {variant.data.split_rule} rule: --split-col applies when "
                          "a model is imported; pass the model's own folder to import it again")
    if not options.data and not options.test_data:
        return variant
    return replace(variant, data=repoint(variant.data, options.data, options.test_data))


def format_of(model: str | Path) -> str:
    """The format a model path will have as a variant, read without importing it (for planning a chain)."""
    return detect(model).format
