"""Matrix files: TOML → frozen records (teachers × named pass chains × batch sizes × devices, plus gate rules)."""
from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from optikit._bounds import check_batch_sizes
from optikit.config import build_config, parse_pass_spec, require
from optikit.errors import ConfigError
from optikit.harness.latency import DEFAULT_MIN_SECONDS
from optikit.variant import safe_name

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")  # a variant name: a CLI word and a file name in every shell
BASELINE = "baseline"
DEVICE = re.compile(r"cpu|cuda(:[0-9]+)?")


def path_part_problem(text: str) -> str | None:
    """Why `text` cannot be one file or folder name under --out (None when it can): a separator or a leading dot
    (`.`, `..`, a hidden name) could land outside its folder or hide there; a control character breaks listings."""
    if not text.strip():
        return "is empty"
    if text.startswith("."):
        return "starts with '.'"
    bad = sorted({c for c in text if c in "/\\" or ord(c) < 32 or ord(c) == 127})
    return f"holds {', '.join(map(repr, bad))}" if bad else None


@dataclass(frozen=True)
class TeacherSpec:
    """The baseline of a group: a teacher recipe (a name from `optikit teachers` or a recipe .toml), a variant
    directory, or the user's own model (`model = "./my-model"`: a HF folder, an .onnx file or folder), and its data."""

    recipe: str
    data: str | None = None  # the data file (or folder) …
    data_env: str | None = None  # … or the environment variable that overrides it (read when the matrix loads)
    label: str = ""  # how rows and folders name this teacher (default: the recipe's stem)
    test_data: str | None = None  # the user's own test set (a model of theirs: see optikit import)
    split_col: str | None = None
    text_cols: tuple[str, ...] = ()
    label_col: str | None = None
    image_col: str | None = None
    labels: tuple[str, ...] = ()

    def data_options(self) -> dict[str, Any]:
        """The keywords of optikit.importing.DataOptions for this teacher (JSON-ready, for a cell process)."""
        return {"data": self.data_path(), "test_data": self.test_data, "split_col": self.split_col,
                "text_cols": list(self.text_cols), "label_col": self.label_col, "image_col": self.image_col,
                "labels": list(self.labels)}

    def __post_init__(self) -> None:
        require(bool(self.recipe.strip()), "teacher `recipe` must not be empty")
        if not self.label:
            # Not the user's words but the recipe's file name ('.', '..' or a hidden file included): made safe.
            name = Path(self.recipe).stem if self.recipe.endswith(".toml") else Path(self.recipe).name
            object.__setattr__(self, "label", name if path_part_problem(name) is None else
                               safe_name(name).lstrip(".-") or "teacher")
        # A label the user wrote is refused rather than changed: rows, folders and the report all show it.
        problem = path_part_problem(self.label)
        require(problem is None, f"teacher label {self.label!r} {problem}: it names the teacher's folder under --out; "
                "use a plain name such as label = \"minilm\" (no '/', '\\', control characters or leading '.')")

    def data_path(self) -> str | None:
        return (self.data_env and os.environ.get(self.data_env)) or self.data


@dataclass(frozen=True)
class ChainStep:
    """One pass of a chain: a registered name and its options, as written."""

    pass_name: str
    options: tuple[tuple[str, Any], ...] = ()

    def spec(self) -> str:
        opts = ",".join(f"{k}={','.join(map(str, v)) if isinstance(v, list | tuple) else v}" for k, v in self.options)
        return f"{self.pass_name}:{opts}" if opts else self.pass_name


@dataclass(frozen=True)
class VariantSpec:
    name: str
    chain: tuple[ChainStep, ...]

    def __post_init__(self) -> None:
        require(bool(NAME.fullmatch(self.name)), f"variant name {self.name!r} must be letters, digits, '-', '_', '.', '+' "
                "and start with a letter or digit: it names the cell's files under --out")
        require(self.name == BASELINE or bool(self.chain), f"variant {self.name!r} has an empty chain: list passes")


@dataclass(frozen=True)
class LatencySpec:
    min_iterations: int = 30
    min_seconds: float = DEFAULT_MIN_SECONDS
    warmup_max: int = 200
    processes: int = 1  # fresh processes per cell's latency, pooled (BenchConfig.processes)

    def __post_init__(self) -> None:
        require(self.min_iterations >= 3, f"latency min_iterations must be ≥ 3, got {self.min_iterations}")
        require(self.min_seconds >= 0, f"latency min_seconds must be ≥ 0, got {self.min_seconds}")
        require(self.processes >= 1, f"latency processes must be ≥ 1, got {self.processes}")


@dataclass(frozen=True)
class MaxF1Drop:
    """No variant (or the named ones) may lose more than `points` of macro-F1 against the baseline."""

    points: float = 1.0
    variants: tuple[str, ...] = ()  # empty: every measured variant
    name: str = ""

    def __post_init__(self) -> None:
        require(self.points >= 0, f"gate max-f1-drop points must be ≥ 0, got {self.points}")
        if not self.name:
            object.__setattr__(self, "name", f"max-f1-drop({self.points:g} points)")


@dataclass(frozen=True)
class MinSpeedup:
    """The named variant must be at least `ratio` times faster (p50) than the baseline at `batch_size` — or than
    the variant named by `against` (e.g. its own parent: `ratio = 1.0` means never slower than it)."""

    variant: str
    ratio: float = 1.0
    batch_size: int = 0  # 0: the largest batch size of the matrix
    against: str = ""  # another variant of the matrix; empty: the baseline
    # The CPUs the target is for: "vnni" (a u8×s8 dot-product instruction: AVX-512 VNNI, AVX-VNNI or AMX),
    # "no-vnni" (AVX2-only x86, ARM without it); empty: every CPU. On another CPU the rule is skipped, saying so.
    cpu: Literal["", "vnni", "no-vnni"] = ""
    # true: fail only when the shortfall is beyond measurement noise (the interval's most favourable end is below
    # `ratio`), for rules like "never slower than its parent" on calls of a few microseconds.
    significant: bool = False
    # true: a target, not a floor: shown (met or missed) in the report and summary, never failing `--gate`.
    advisory: bool = False
    name: str = ""

    def __post_init__(self) -> None:
        require(self.ratio > 0, f"gate min-speedup ratio must be > 0, got {self.ratio}")
        require(self.cpu in ("", "vnni", "no-vnni"), f"gate min-speedup cpu must be vnni or no-vnni, got {self.cpu!r}")
        require(self.against != self.variant, f"gate min-speedup compares {self.variant} against itself: name "
                "another variant in `against`, or leave it out for the baseline")
        if not self.name:
            vs = f" vs {self.against}" if self.against else ""
            on = f" on {self.cpu}" if self.cpu else ""
            object.__setattr__(self, "name", f"min-speedup({self.variant}{vs} ≥ {self.ratio:g}×{on})")


@dataclass(frozen=True)
class MinSizeRatio:
    """The named variant must be at least `ratio` times smaller than the baseline: the whole artifact on disk
    (`of = "artifact"`, tokenizer and config included) or its weight files alone (`of = "weights"`)."""

    variant: str
    ratio: float = 1.0
    of: Literal["artifact", "weights"] = "artifact"
    name: str = ""

    def __post_init__(self) -> None:
        require(self.ratio > 0, f"gate min-size-ratio ratio must be > 0, got {self.ratio}")
        require(self.of in ("artifact", "weights"), f"gate min-size-ratio of must be artifact or weights, got {self.of!r}")
        if not self.name:
            object.__setattr__(self, "name", f"min-size-ratio({self.variant} ≥ {self.ratio:g}×)")


@dataclass(frozen=True)
class NoFailures:
    """Every cell of the matrix must have run and been measured."""

    name: str = "no-failures"


GateRule = MaxF1Drop | MinSpeedup | MinSizeRatio | NoFailures
RULE_KINDS: dict[str, type] = {"max-f1-drop": MaxF1Drop, "min-speedup": MinSpeedup, "min-size-ratio": MinSizeRatio,
                               "no-failures": NoFailures}


@dataclass(frozen=True)
class Matrix:
    name: str
    teachers: tuple[TeacherSpec, ...]
    variants: tuple[VariantSpec, ...]
    batch_sizes: tuple[int, ...] = (1, 32)
    devices: tuple[str, ...] = ("cpu",)
    threads: int = 0  # 0: min(cores, 8)
    latency: LatencySpec = field(default_factory=LatencySpec)
    gate: tuple[GateRule, ...] = ()
    f1_budget_points: float = 1.0  # the report's verdict ships nothing that loses more macro-F1 than this
    cell_timeout_s: float = 3600.0
    plugins: tuple[str, ...] = ()  # modules imported in every cell (they may register passes)
    description: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        require(bool(self.teachers), "matrix has no teachers: add [[teachers]] with a recipe")
        require(bool(self.batch_sizes), "batch_sizes must not be empty")
        check_batch_sizes(self.batch_sizes, "batch_sizes")  # whole numbers in [1, MAX_BATCH_SIZE]
        require(bool(self.devices), "devices must not be empty")
        for d in self.devices:
            require(bool(DEVICE.fullmatch(d)), f"device must be cpu or cuda (cuda:N for GPU N), got {d!r}")
        require(self.threads >= 0, f"threads must be ≥ 0, got {self.threads}")
        require(self.cell_timeout_s > 0, f"cell_timeout_s must be > 0, got {self.cell_timeout_s}")
        labels = [t.label for t in self.teachers]
        require(len(set(labels)) == len(labels), f"two teachers share the label {labels}: set `label`")
        names = [v.name for v in self.variants]
        dup = sorted({n for n in names if names.count(n) > 1})
        require(not dup, f"variant {dup[0] if dup else ''!r} is defined twice")
        for rule in self.gate:
            against = [rule.against] if isinstance(rule, MinSpeedup) and rule.against else []
            for v in ([rule.variant] if isinstance(rule, MinSpeedup | MinSizeRatio) else
                      list(getattr(rule, "variants", ()))) + against:
                require(v in names and v != BASELINE, f"gate rule {rule.name} names unknown variant {v!r}: "
                        f"known variants are {', '.join(n for n in names if n != BASELINE)}")
            if isinstance(rule, MinSpeedup) and rule.batch_size:
                require(rule.batch_size in self.batch_sizes,
                        f"gate rule {rule.name} uses batch size {rule.batch_size}, which the matrix does not measure")


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a table, got {type(value).__name__}")
    return dict(value)


def _step(item: Any, where: str) -> ChainStep:
    if isinstance(item, str):
        name, options = parse_pass_spec(item)
        return ChainStep(name, tuple(options.items()))
    if isinstance(item, Mapping):
        opts = dict(item)
        name = opts.pop("pass", None)
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}: a table step needs `pass = \"NAME\"`, got {dict(item)!r}")
        return ChainStep(name, tuple((k.replace("-", "_"), v) for k, v in opts.items()))
    raise ConfigError(f"{where}: a step is \"name:key=value\" or {{pass = \"name\", …}}, got {item!r}")


def _variants(raw: Any) -> tuple[VariantSpec, ...]:
    out = [VariantSpec(BASELINE, ())]
    for name, chain in _table(raw, "[variants]").items():
        if name == BASELINE:
            raise ConfigError("`baseline` is the teacher itself: give the variant another name")
        steps = chain if isinstance(chain, list) else [chain]
        out.append(VariantSpec(name, tuple(_step(s, f"variant {name!r}") for s in steps)))
    return tuple(out)


def _rules(raw: Any) -> tuple[GateRule, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError("gate rules are a list of tables: write [[gate]] with kind = \"max-f1-drop\" (or "
                          f"{', '.join(RULE_KINDS)})")
    rules: list[GateRule] = []
    for i, item in enumerate(raw, 1):
        opts = _table(item, f"gate rule {i}")
        kind = opts.pop("kind", None)
        if kind not in RULE_KINDS:
            raise ConfigError(f"gate rule {i} has kind {kind!r}: use one of {', '.join(RULE_KINDS)}")
        rules.append(build_config(RULE_KINDS[kind], opts, f"gate rule {i} ({kind})"))
    return tuple(rules)


def _teachers(raw: Any, base: Path) -> tuple[TeacherSpec, ...]:
    items = raw if isinstance(raw, list) else [raw] if raw is not None else []
    out = []
    for i, item in enumerate(items, 1):
        table = {"recipe": item} if isinstance(item, str) else dict(_table(item, f"teacher {i}"))
        if "model" in table:  # `model = PATH` reads better than `recipe = PATH` for the user's own model
            if "recipe" in table:
                raise ConfigError(f"teacher {i} sets both recipe and model: keep one")
            table["recipe"] = table.pop("model")
        spec = build_config(TeacherSpec, table, f"teacher {i}")
        # Paths in a matrix file are relative to the file, so the matrix runs the same from any directory.
        fix = {}
        if not Path(spec.recipe).is_absolute() and (spec.recipe.endswith(".toml") or (base / spec.recipe).exists()):
            fix["recipe"] = str((base / spec.recipe).resolve())
        for key in ("data", "test_data"):
            value = getattr(spec, key)
            if value and not Path(value).is_absolute():
                fix[key] = str((base / value).resolve())
        out.append(TeacherSpec(**{**spec.__dict__, **fix}) if fix else spec)
    return tuple(out)


TOP_KEYS = {"name", "description", "teachers", "variants", "batch_sizes", "devices", "threads", "latency", "gate",
            "f1_budget_points", "cell_timeout_s", "plugins"}


def parse_matrix(raw: Mapping[str, Any], source: str = "<matrix>", base: Path | None = None) -> Matrix:
    """A Matrix from a parsed TOML document; any unknown key is an error that names the known ones."""
    raw = dict(raw)
    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        raise ConfigError(f"{source}: unknown key {unknown[0]!r}: known keys are {', '.join(sorted(TOP_KEYS))}")
    base = base or Path.cwd()
    scalars = build_config(_Scalars, {k: raw[k] for k in _Scalars.__dataclass_fields__ if k in raw}, source)
    latency = build_config(LatencySpec, _table(raw.get("latency", {}), "[latency]"), "[latency]")
    return Matrix(name=scalars.name or Path(source).stem, teachers=_teachers(raw.get("teachers"), base),
                  variants=_variants(raw.get("variants", {})), batch_sizes=scalars.batch_sizes,
                  devices=scalars.devices, threads=scalars.threads, latency=latency, gate=_rules(raw.get("gate")),
                  f1_budget_points=scalars.f1_budget_points, cell_timeout_s=scalars.cell_timeout_s,
                  plugins=scalars.plugins, description=scalars.description, source=source)


@dataclass(frozen=True)
class _Scalars:
    """The plain top-level settings, typed through build_config like every other file."""

    name: str = ""
    description: str = ""
    batch_sizes: tuple[int, ...] = (1, 32)
    devices: tuple[str, ...] = ("cpu",)
    threads: int = 0
    f1_budget_points: float = 1.0
    cell_timeout_s: float = 3600.0
    plugins: tuple[str, ...] = ()


def load_matrix(path: str | Path) -> Matrix:
    """Reads a matrix TOML file; errors are one line naming the file."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"matrix file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    return parse_matrix(raw, str(path), path.resolve().parent)


def narrow(matrix: Matrix, variants: tuple[str, ...] | list[str] = (), passes: tuple[str, ...] | list[str] = ()) -> Matrix:
    """The same matrix with only the named variants and those whose chain uses one of `passes` (the baseline always
    kept); with neither, the matrix itself. Gate rules follow: a rule about dropped variants only is dropped, a
    max-f1-drop list keeps the variants still run. An unknown name is one error listing the known ones."""
    if not variants and not passes:
        return matrix
    named = [v.name for v in matrix.variants if v.name != BASELINE]
    used = sorted({s.pass_name for v in matrix.variants for s in v.chain})
    where = Path(matrix.source).name if matrix.source else matrix.name
    for name in variants:
        if name != BASELINE and name not in named:
            raise ConfigError(f"{where} has no variant {name!r}: its variants are {', '.join(named) or 'none'}")
    for name in passes:
        if name not in used:
            raise ConfigError(f"no variant of {where} uses pass {name!r}: its chains use {', '.join(used) or 'none'}")
    keep = {BASELINE, *variants} | {v.name for v in matrix.variants if any(s.pass_name in passes for s in v.chain)}

    def rule(r: GateRule) -> GateRule | None:
        if isinstance(r, MinSpeedup | MinSizeRatio):
            return r if r.variant in keep else None
        if isinstance(r, MaxF1Drop) and r.variants:
            # An empty list would mean "every variant": a rule left with none of its own is dropped instead.
            still = tuple(v for v in r.variants if v in keep)
            return replace(r, variants=still) if still else None
        return r

    gate = tuple(g for g in (rule(r) for r in matrix.gate) if g is not None)
    return replace(matrix, variants=tuple(v for v in matrix.variants if v.name in keep), gate=gate)
