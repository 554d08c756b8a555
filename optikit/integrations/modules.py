"""In-memory models → teacher Variants: the entry point of the pipeline for training scripts (no file needed).

Three routes, all written without pickle so a variant stays safe to load:
- a Hugging Face `PreTrainedModel` → an `hf` variant (`save_pretrained`, safetensors, plus its tokenizer);
- any `nn.Module` with `builder=` naming a registered architecture (built-in or an `optikit.architectures`
  entry point) → a `torch` variant (safetensors weights, rebuilt from the builder and its kwargs);
- any other `nn.Module` → an `onnx` variant (the module is exported; passes that need torch weights — pruning,
  distillation — then refuse it before doing any work, which is the honest limit of a graph without its code).
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optikit.config import require
from optikit.data import Dataset, DataSpec, load_data, load_digits, splits_for
from optikit.errors import ConfigError, DataError
from optikit.importing import id2label_names
from optikit.variant import TaskInfo, Variant, library_versions, load_variant, safe_name, variant_id

DataArg = str | Path | Dataset | DataSpec | Mapping[str, Any]


@dataclass(frozen=True)
class ModuleSpec:
    """How an in-memory module becomes a teacher variant (validated before anything is written)."""

    name: str = "module"
    builder: str | None = None  # a registered architecture name: the torch route
    builder_kwargs: tuple[tuple[str, Any], ...] = ()
    max_length: int = 128  # text only
    seed: int = 0  # the split seed

    def __post_init__(self) -> None:
        require(bool(self.name.strip()), "name must not be empty")
        require(self.max_length >= 2, f"max_length must be ≥ 2, got {self.max_length}")


def resolve_data(data: DataArg, text_cols: Sequence[str] | None = None, label_col: str | None = None, *,
                 label_names: Sequence[str] | None = None, test_data: str | Path | None = None,
                 split_col: str | None = None) -> Dataset:
    """`"digits"`, a data path (CSV, TSV, Parquet, JSON Lines, a save_to_disk folder; with text_cols and label_col),
    a {path, text_cols, label_col, test_data, split_col} mapping, a DataSpec, or an optikit Dataset whose spec can be
    reloaded (every measuring process reloads it).

    `label_names` (the model's, in output order) numbers the labels: each data label maps to its index there,
    whatever order the data lists them in; without it labels are numbered by their sorted names. `test_data` (the
    user's own test set) or `split_col` (a column naming each row's split) decide the test rows."""
    names = tuple(str(n) for n in label_names) if label_names is not None else None
    if test_data is not None and split_col is not None:
        raise ConfigError("test_data= and split_col= both name the test set: pass one of them")
    if isinstance(data, Dataset):
        if data.spec.source != "digits" and not data.spec.path:
            raise DataError("the Dataset has no file behind it: pass data='digits' or a data file path")
        if (names is None or names == data.label_names) and test_data is None and split_col is None:
            return data
        data = data.spec
    if isinstance(data, DataSpec):
        data = {"path": data.path, "text_cols": data.text_cols, "label_col": data.label_col,
                "test_data": data.test_path, "split_col": data.split_col} if data.source != "digits" else "digits"
    if isinstance(data, Mapping):
        text_cols = data.get("text_cols", text_cols)
        label_col = data.get("label_col", label_col)
        test_data = test_data if test_data is not None else data.get("test_data") or data.get("test_path")
        split_col = split_col if split_col is not None else data.get("split_col")
        data = data.get("path") or ""
    if str(data) == "digits":
        if test_data is not None or split_col is not None:
            raise ConfigError("data='digits' has its own seeded split: test_data= and split_col= need a data file")
        digits = load_digits()
        if names is not None and names != digits.label_names:
            raise ConfigError(f"label_names {list(names)} are not the digits' order {list(digits.label_names)}: "
                              "data='digits' numbers its labels 0-9, so the module must output them in that order")
        return digits
    if not text_cols or not label_col:
        raise ConfigError(f"data {data}: pass text_cols=[…] and label_col=… to name the text and label columns")
    if not Path(str(data)).expanduser().exists():
        raise DataError(f"data file {data} does not exist: pass an existing CSV or Parquet file")
    if test_data is not None and not Path(str(test_data)).expanduser().exists():
        raise DataError(f"test data {test_data} does not exist: pass an existing file with the same columns")
    return load_data(str(data), text_cols=tuple(text_cols), label_col=label_col, label_names=names,
                     test_path=test_data, split_col=split_col)


def _is_hf(module: Any) -> bool:
    return hasattr(module, "save_pretrained") and hasattr(module, "config")


def model_label_names(module: Any, label_names: Sequence[str] | None = None) -> tuple[str, ...] | None:
    """The model's label space in output order: a Hugging Face model's `config.id2label` (index order), else
    `label_names=` (a plain module, or an HF model whose names are the generic LABEL_i); None when neither names
    them, and the data's sorted names are used. Only reads the model."""
    given = tuple(str(n) for n in label_names) if label_names is not None else None
    if given is not None and len(set(given)) != len(given):
        raise ConfigError(f"label_names repeats a name: {list(given)}")
    if not _is_hf(module):
        return given
    config = module.config
    outputs = getattr(config, "num_labels", None)
    names = id2label_names(getattr(config, "id2label", None), "the model's config")
    if names:
        if given is not None and given != names:
            raise ConfigError(f"label_names {list(given)} differ from the model's id2label {list(names)}: drop "
                              "label_names= (the model's names are used) or fix model.config.id2label")
        return names
    if given is not None and outputs and len(given) != outputs:
        raise ConfigError(f"label_names names {len(given)} labels but the model has {outputs} outputs: name each "
                          "output once, in output order")
    return given


def _check_outputs(module: Any, dataset: Dataset) -> None:
    if _is_hf(module):
        n = getattr(module.config, "num_labels", None)
        if n != len(dataset.label_names):
            raise ConfigError(f"the model has {n} labels but the data has {len(dataset.label_names)}: "
                              f"{list(dataset.label_names)}; pass label_names= in the model's output order")


def _builder_name(builder: str | Callable[..., Any] | None) -> str | None:
    """A registered architecture name: only those can be rebuilt in every measuring process."""
    from optikit.models import architectures

    if builder is None or isinstance(builder, str):
        if builder is not None:
            architectures.get(builder)  # unknown name → an error that lists the known ones
        return builder
    for name, fn in architectures:
        if fn is builder:
            return name
    raise ConfigError(f"builder {getattr(builder, '__name__', builder)!r} is not a registered architecture: declare "
                      "it as an entry point in group optikit.architectures (so every process can rebuild it), "
                      "pass its registered name, or pass no builder to export the module to ONNX")


def _weights_digest(module: Any) -> str:
    """The variant id hashes the weights themselves, so retraining gives a new variant and a rerun reuses it."""
    import torch

    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{key}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update((t.float() if t.dtype == torch.bfloat16 else t).numpy().tobytes())
    return digest.hexdigest()


def _export_onnx(module: Any, dataset: Dataset, splits: Any, directory: Path) -> None:
    """The route for a module whose code optikit cannot rebuild: export-onnx's exporter and its agreement check."""
    import torch

    from optikit.errors import PassError
    from optikit.models import PIXEL_INPUT
    from optikit.passes._ort_quant import session_logits
    from optikit.passes.export_onnx import VALIDATION_EXAMPLES, ExportOnnxConfig, check_agreement, export_module

    config = ExportOnnxConfig()
    sample = dataset.take(splits.validation[:VALIDATION_EXAMPLES]).inputs
    path = directory / "model.onnx"
    try:
        export_module(module, {PIXEL_INPUT: sample[:2]}, path, config)  # batch 2: the exporter specialises 0/1
    except PassError as exc:
        raise PassError(f"cannot export {type(module).__name__}: {exc}; or pass builder= naming a registered "
                        "architecture") from exc
    with torch.inference_mode():
        reference = module(torch.from_numpy(sample)).float().numpy()
    check_agreement(reference, session_logits(path, [{PIXEL_INPUT: sample}], threads=1), config,
                    type(module).__name__)


def from_module(module: Any, *, data: DataArg, label_names: Sequence[str] | None = None,
                tokenizer: Any = None, builder: str | Callable[..., Any] | None = None,
                builder_kwargs: Mapping[str, Any] | None = None, text_cols: Sequence[str] | None = None,
                label_col: str | None = None, test_data: str | Path | None = None, split_col: str | None = None,
                name: str = "module", max_length: int = 128, seed: int = 0, home: Path | None = None) -> Variant:
    """Saves an in-memory classifier as a teacher Variant (content-addressed: the same weights and data reuse it).

    The label space is the model's: a Hugging Face model's `config.id2label` (in index order), else `label_names`
    (in output order), else the data's sorted label names. The data's labels are mapped through it, whatever order
    they come in; a data label the model does not know is an error. `test_data` (your own test set, same columns)
    or `split_col` (a column naming each row's split) choose the test rows; otherwise optikit splits by `seed`.
    The module and its config are only read: the variant is a separate copy.

    Example:
        model = digits_cnn(channels=(8, 16, 16), hidden=32)   # … trained in your own loop
        teacher = optikit.from_module(model, data="digits", builder="digits-cnn",
                                      builder_kwargs={"channels": (8, 16, 16), "hidden": 32})
    """
    import torch

    from optikit._io import atomic_directory
    from optikit.models import save_module
    from optikit.teach import optikit_home

    spec = ModuleSpec(name, None, tuple((builder_kwargs or {}).items()), max_length, seed)
    if not isinstance(module, torch.nn.Module):
        raise ConfigError(f"from_module takes a torch nn.Module, got {type(module).__name__}")
    names = model_label_names(module, label_names)
    dataset = resolve_data(data, text_cols, label_col, label_names=names, test_data=test_data, split_col=split_col)
    _check_outputs(module, dataset)
    hf = _is_hf(module)
    if hf and dataset.kind != "text":
        raise ConfigError("a Hugging Face model needs text data: pass a CSV/Parquet path with text_cols, label_col")
    if hf and tokenizer is None:
        raise ConfigError("a Hugging Face text model needs its tokenizer: pass tokenizer=… (object or folder)")
    if not hf and dataset.kind != "image":
        raise ConfigError("a plain nn.Module is supported for image data (digits); wrap text models as Hugging Face")
    arch_name = None if hf else _builder_name(builder)
    fmt = "hf" if hf else "torch" if arch_name else "onnx"
    architecture: dict[str, Any] = {"name": arch_name, **dict(spec.builder_kwargs)} if arch_name else {}
    splits = splits_for(dataset, seed)
    d = dataset.spec
    vid = variant_id("module", fmt, _weights_digest(module), architecture, d.key, d.text_cols, d.label_col,
                     splits.rule, seed, dataset.label_names, max_length,
                     {k: library_versions().get(k) for k in ("torch", "transformers")})
    target = (home or optikit_home() / "modules") / f"{safe_name(name)}-{vid}"
    if (target / "variant.json").is_file():
        return load_variant(target)
    with atomic_directory(target, replace=True) as tmp, _inference_mode(module):
        if fmt == "onnx":
            _export_onnx(module, dataset, splits, tmp)
        else:
            if fmt == "torch":
                # The builder must rebuild exactly these tensors, else the variant could never be reloaded.
                shapes = {k: tuple(t.shape) for k, t in _build(architecture).state_dict().items()}
                if shapes != {k: tuple(t.shape) for k, t in module.state_dict().items()}:
                    raise ConfigError(f"builder {arch_name!r} with {dict(spec.builder_kwargs)} does not rebuild this "
                                      "module (parameter names or shapes differ): pass the kwargs it was built with")
                save_module(module, fmt, tmp)
            else:
                _save_hf_copy(module, dataset.label_names, tmp)
        if hf:
            _save_tokenizer(tokenizer, tmp)
        task = TaskInfo(dataset.kind, dataset.label_names, max_length)
        Variant(id=vid, name=safe_name(name), format=fmt, path=tmp, task=task, data=dataset.spec,  # type: ignore[arg-type]
                splits=splits, architecture=architecture, versions=library_versions(), origin="from_module",
                report={"source": "from_module", "class": type(module).__name__,
                        "data_notes": list(dataset.notes)}).save_manifest(tmp)
    return load_variant(target)


@contextlib.contextmanager
def _inference_mode(module: Any) -> Iterator[None]:
    """Eval mode on the CPU while the variant is written; the user's module gets its mode and device back."""
    params = list(module.parameters())
    device = params[0].device if params else None
    training = module.training
    module.eval()
    if device is not None and device.type != "cpu":
        module.cpu()
    try:
        yield
    finally:
        module.train(training)
        if device is not None and device.type != "cpu":
            module.to(device)


def _save_hf_copy(module: Any, label_names: Sequence[str], directory: Path) -> None:
    """`save_pretrained` into the variant with a copy of the config: save_pretrained writes fields (architectures,
    dtype) into the config it saves, and the user's config must stay as it was. The copy names the labels, so the
    variant's config.json agrees with its manifest even when the model's own names were LABEL_i."""
    original = module.config
    config = copy.deepcopy(original)
    config.id2label = dict(enumerate(label_names))
    config.label2id = {n: i for i, n in enumerate(label_names)}
    module.config = config
    try:
        module.save_pretrained(str(directory), safe_serialization=True)
    finally:
        module.config = original


def _build(architecture: dict[str, Any]) -> Any:
    from optikit.models import build_architecture

    return build_architecture(architecture)


def _save_tokenizer(tokenizer: Any, directory: Path) -> None:
    if isinstance(tokenizer, str | Path):
        from optikit.models import copy_tokenizer

        copy_tokenizer(Path(tokenizer), directory)
    else:
        tokenizer.save_pretrained(str(directory))
