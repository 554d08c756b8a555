"""The pass contract: a name, a frozen config, one `apply` method; the base owns everything else."""
from __future__ import annotations

import contextlib
import dataclasses
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from optikit._io import atomic_directory
from optikit._registry import Registry
from optikit.config import build_config, config_to_dict, parse_pass_spec
from optikit.errors import ConfigError, OptikitError, PassError
from optikit.progress import say
from optikit.variant import Format, Step, Variant, library_versions, load_variant, variant_id


@dataclass
class PassContext:
    """What every pass may use: the task's data (loaded once), threads, and where variants are written."""

    workdir: Path
    threads: int = 2
    seed: int = 0
    _datasets: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        from optikit.config import require

        require(self.threads >= 1, f"threads must be ≥ 1, got {self.threads}")

    def dataset(self, variant: Variant) -> Any:
        from optikit.teach import dataset_for

        key = f"{variant.data.key}|{','.join(variant.task.label_names)}"
        if key not in self._datasets:
            self._datasets[key] = dataset_for(variant)
        return self._datasets[key]

    def split(self, variant: Variant, name: str) -> Any:
        return self.dataset(variant).take(getattr(variant.splits, name))


@dataclass(frozen=True)
class PassOutput:
    """What `apply` returns besides the files it wrote: the new format, architecture and a report of its work."""

    format: Format
    report: dict[str, Any] = field(default_factory=dict)
    architecture: dict[str, Any] | None = None


class Pass(ABC):
    """Subclass once: set `name`, `Config`, `accepts`, and implement `apply`."""

    name: ClassVar[str]
    Config: ClassVar[type]
    accepts: ClassVar[frozenset[str]]
    summary: ClassVar[str] = ""

    def __init__(self, config: Any = None) -> None:
        self.config = config if config is not None else self.Config()

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Pass:
        return cls(build_config(cls.Config, options, f"pass {cls.name!r}"))

    def accepted_formats(self) -> frozenset[str]:
        """The formats this instance takes: `accepts`, unless its config narrows it (quantize's backend)."""
        return self.accepts

    def output_format(self, input_format: str) -> Format:
        """The format this pass produces from `input_format` (most passes keep it)."""
        return input_format  # type: ignore[return-value]

    def check_plan(self, before: Sequence[Pass]) -> None:
        """Raises ConfigError at planning time if this pass cannot follow `before` (the passes planned so far)."""

    def check(self, variant: Variant) -> None:
        """Raises ConfigError before any work if this pass cannot take `variant` (beyond its format)."""

    @abstractmethod
    def apply(self, variant: Variant, ctx: PassContext, out: Path) -> PassOutput:
        """Writes the new artifact into `out` (an empty directory) and says what it did."""

    @contextlib.contextmanager
    def _failures(self, variant: Variant) -> Iterator[None]:
        """User errors pass through; anything else a library raised becomes one PassError line (cause chained)."""
        try:
            yield
        except OptikitError:
            raise
        except Exception as exc:
            text = str(exc).strip()
            raise PassError(f"pass {self.name} failed on {variant.name}: {type(exc).__name__}: "
                            f"{text.splitlines()[0][:300] if text else ''}") from exc

    def run(self, variant: Variant, ctx: PassContext, *, auto: bool = False) -> Variant:
        """Validates, seeds, writes atomically, records lineage, and reuses an identical earlier result."""
        if variant.format not in self.accepted_formats():
            raise ConfigError(f"pass {self.name} cannot take a {variant.format} model "
                              f"(it takes {', '.join(sorted(self.accepted_formats()))})")
        with self._failures(variant):
            self.check(variant)
        step = Step(self.name, config_to_dict(self.config), auto)
        vid = variant_id(variant.id, step.pass_name, step.config, library_versions().get("optikit"))
        target = ctx.workdir / vid
        if (target / "variant.json").is_file():
            # Reused: the data is the parent's (same content by construction of the id), wherever it lies now.
            return dataclasses.replace(load_variant(target), data=variant.data)
        from optikit.training import seed_everything

        seed_everything(ctx.seed)
        say(f"pass {self.name} on {variant.name} …")
        start = time.perf_counter()
        with self._failures(variant), atomic_directory(target, replace=True) as tmp:
            result = self.apply(variant, ctx, tmp)
            report = {**result.report, "seconds": round(time.perf_counter() - start, 2)}
            child = variant.derive(
                id=vid, name=f"{variant.name}+{self.name}", format=result.format, path=target, step=step,
                architecture=result.architecture if result.architecture is not None else variant.architecture,
                report=report, versions=library_versions())
            child.save_manifest(tmp)
        return load_variant(target)


passes: Registry[type[Pass]] = Registry("optikit.passes", "pass", "passes")


def make_pass(spec: str | Pass | tuple[str, Mapping[str, Any]]) -> Pass:
    """A Pass from `name[:k=v,...]`, a (name, options) pair, or a Pass instance."""
    if isinstance(spec, Pass):
        return spec
    if isinstance(spec, tuple):
        name, options = spec
    else:
        name, options = parse_pass_spec(spec)
    return passes.get(name).from_options(options)


def plan_chain(start_format: str, chain: Sequence[Pass]) -> list[tuple[Pass, bool]]:
    """Orders the work before any of it runs: inserts `export-onnx` where a pass needs ONNX, and rejects an
    order that cannot work, naming the pass to add or move."""
    planned: list[tuple[Pass, bool]] = []
    fmt = start_format
    for index, p in enumerate(chain):
        if fmt == "onnx" and fmt not in p.accepted_formats() and index == 0 and start_format == "onnx":
            raise ConfigError(f"pass {p.name} cannot take a onnx model: it needs torch weights, and an ONNX-only model "
                              "is a graph without them; it can be quantized and benched, or pass the Hugging Face / "
                              f"torch model to {p.name} it")
        if fmt not in p.accepted_formats():
            if "onnx" in p.accepted_formats() and fmt in ("torch", "hf"):
                export = passes.get("export-onnx")()
                planned.append((export, True))
                fmt = export.output_format(fmt)
            else:
                before = [q.name for q in chain[:index] if q.output_format("torch") == "onnx" or q.name == "export-onnx"]
                hint = (f"move {p.name} before {before[0]}" if before
                        else f"{p.name} takes {', '.join(sorted(p.accepted_formats()))}")
                raise ConfigError(f"pass {p.name} cannot take a {fmt} model at step {index + 1}: {hint}")
        p.check_plan([q for q, _ in planned])
        planned.append((p, False))
        fmt = p.output_format(fmt)
    return planned


def run_chain(variant: Variant, chain: Sequence[Pass], ctx: PassContext) -> list[Variant]:
    """Runs a planned chain and returns every variant it produced, in order."""
    produced = []
    for p, auto in plan_chain(variant.format, chain):
        variant = p.run(variant, ctx, auto=auto)
        produced.append(variant)
    return produced
