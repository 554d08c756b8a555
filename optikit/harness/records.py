"""The typed records one variant's measurement is made of, and the JSON edge they cross.

Each record is built where it is measured (metrics.py, significance.py, behavioral.py, …) and stays typed until
`plain()` turns it into JSON. `from_dict` reads what any harness version wrote: a field an older version did not
record gets its neutral default, a key a newer version added is ignored. Non-finite floats become null on the way
out (strict JSON) and NaN on the way back in.

`Latency` (latency.py) and `Size` (size.py) live beside the code that measures them; everything else is here.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


def plain(obj: Any) -> Any:
    """`obj` as JSON values: records → objects (their `to_dict` where they define one), tuples → lists, mapping keys →
    strings, NaN and ±inf → null."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        to_dict = getattr(obj, "to_dict", None)  # a record that adds a derived figure (Size) or drops an empty one
        if callable(to_dict):
            return plain(to_dict())
        return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return plain(obj.item())
    return obj


def fields_of(obj: Any) -> dict[str, Any]:
    """A record's fields, one level deep (for `to_dict` methods that add a derived figure)."""
    return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}


def num(value: Any, default: float = math.nan) -> float:
    """A float read back from JSON: null (a non-finite figure written out) → NaN, absent → `default`."""
    return default if value is None else float(value)


def opt(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class ClassScores:
    precision: float
    recall: float
    f1: float
    support: int

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ClassScores:
        return cls(num(d.get("precision")), num(d.get("recall")), num(d.get("f1")), int(d.get("support", 0)))


@dataclass(frozen=True)
class SliceScores:
    """n examples of a slice, with accuracy and macro-F1 within it (None for an empty slice)."""

    n: int
    accuracy: float | None
    f1_macro: float | None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SliceScores:
        return cls(int(d.get("n", 0)), opt(d.get("accuracy")), opt(d.get("f1_macro")))


@dataclass(frozen=True)
class Alignment:
    """Does the model give the right answer: accuracy and precision / recall / F1 (macro, weighted, per class)."""

    accuracy: float
    f1_macro: float
    f1_weighted: float
    precision_macro: float = math.nan
    recall_macro: float = math.nan
    precision_weighted: float = math.nan
    recall_weighted: float = math.nan
    per_class: Mapping[str, ClassScores] = field(default_factory=dict)
    per_slice: Mapping[str, SliceScores] = field(default_factory=dict)

    def metric(self, name: str) -> float:
        """One of the scalar figures by name (accuracy, f1_macro, precision_weighted, …)."""
        value = getattr(self, name, None)
        if not isinstance(value, float):
            raise KeyError(name)
        return value

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Alignment:
        f1 = num(d.get("f1_macro"))
        return cls(num(d.get("accuracy")), f1, num(d.get("f1_weighted"), f1),
                   num(d.get("precision_macro")), num(d.get("recall_macro")), num(d.get("precision_weighted")),
                   num(d.get("recall_weighted")),
                   {str(k): ClassScores.from_dict(v) for k, v in (d.get("per_class") or {}).items()},
                   {str(k): SliceScores.from_dict(v) for k, v in (d.get("per_slice") or {}).items()})


@dataclass(frozen=True)
class ReliabilityBin:
    low: float
    high: float
    count: int
    accuracy: float
    confidence: float

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ReliabilityBin:
        return cls(num(d["low"]), num(d["high"]), int(d["count"]), num(d["accuracy"]), num(d["confidence"]))


@dataclass(frozen=True)
class Capability:
    """How much probability the model puts on the truth: log loss, Brier score, ECE and its reliability bins."""

    log_loss: float
    ece: float
    brier: float = math.nan
    reliability: tuple[ReliabilityBin, ...] = ()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Capability:
        return cls(num(d.get("log_loss")), num(d.get("ece")), num(d.get("brier")),
                   tuple(ReliabilityBin.from_dict(b) for b in d.get("reliability") or ()))


@dataclass(frozen=True)
class Flip:
    """One test example whose prediction changed against the baseline; `kind` is right_to_wrong, wrong_to_right or
    wrong_to_wrong. Labels are class indices (JSON written by early versions may hold names)."""

    index: int
    text: str
    label: int | str
    baseline: int | str
    variant: int | str
    kind: str

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Flip:
        return cls(int(d["index"]), str(d.get("text", f"example #{d['index']}")), d["label"], d["baseline"],
                   d["variant"], str(d["kind"]))


@dataclass(frozen=True)
class Fidelity:
    """Agreement with the baseline: the share of equal predictions, flips each way, KL(baseline ‖ variant), the flip
    matrix (rows: baseline prediction, columns: variant prediction) and the flipped examples themselves."""

    agreement: float
    flips_right_to_wrong: int
    flips_wrong_to_right: int
    kl_mean: float = math.nan
    flip_matrix: tuple[tuple[int, ...], ...] = ()
    flipped: tuple[Flip, ...] = ()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Fidelity:
        return cls(num(d.get("agreement")), int(d.get("flips_right_to_wrong", 0)), int(d.get("flips_wrong_to_right", 0)),
                   num(d.get("kl_mean")), tuple(tuple(int(x) for x in row) for row in d.get("flip_matrix") or ()),
                   tuple(Flip.from_dict(f) for f in d.get("flipped") or ()))


@dataclass(frozen=True)
class Interval:
    """A paired-bootstrap delta (variant − baseline) with its interval; significant when the interval excludes 0."""

    delta: float
    low: float
    high: float
    significant: bool

    @classmethod
    def of(cls, delta: float, low: float, high: float) -> Interval:
        # A zero-width interval at 0 (identical models) is not significant.
        return cls(delta, low, high, bool(low > 0 or high < 0))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Interval:
        return cls(num(d.get("delta")), num(d.get("low")), num(d.get("high")), bool(d.get("significant", False)))


@dataclass(frozen=True)
class McNemar:
    """McNemar's exact test on per-example correctness: b right→wrong, c wrong→right, two-sided p."""

    b: int
    c: int
    p_value: float

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> McNemar:
        return cls(int(d.get("b", 0)), int(d.get("c", 0)), num(d.get("p_value")))


@dataclass(frozen=True)
class Significance:
    """The paired bootstrap's deltas of every metric against the baseline, and McNemar's test."""

    deltas: Mapping[str, Interval] = field(default_factory=dict)
    mcnemar: McNemar | None = None
    seed: int | None = None
    resamples: int | None = None
    confidence: float | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Significance:
        return cls({str(k): Interval.from_dict(v) for k, v in (d.get("deltas") or {}).items()},
                   McNemar.from_dict(d["mcnemar"]) if d.get("mcnemar") else None,
                   d.get("seed"), d.get("resamples"), opt(d.get("confidence")))


@dataclass(frozen=True)
class Quadrant:
    """Where the accuracy and log-loss changes put a variant (quadrant.py's labels)."""

    label: str
    accuracy_delta: float
    log_loss_delta: float

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Quadrant:
        return cls(str(d["label"]), num(d.get("accuracy_delta")), num(d.get("log_loss_delta")))


@dataclass(frozen=True)
class CaseCount:
    cases: int
    passed: int

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CaseCount:
        return cls(int(d.get("cases", 0)), int(d.get("passed", 0)))


@dataclass(frozen=True)
class Regression:
    """A behavioural case the baseline passes and the variant fails."""

    id: str
    type: str
    description: str

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Regression:
        return cls(str(d["id"]), str(d.get("type", "")), str(d.get("description", "")))


@dataclass(frozen=True)
class Behavioral:
    """The behavioural suite's outcome: pass rates overall and per type (mft, inv, dir; None for a type without
    cases), and the regressions against the baseline."""

    pass_rate: float | None
    suite: str = ""
    path: str | None = None
    cases: int = 0
    by_type: Mapping[str, float | None] = field(default_factory=dict)
    counts: Mapping[str, CaseCount] = field(default_factory=dict)
    regressions: tuple[Regression, ...] = ()
    failed: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Behavioral:
        return cls(opt(d.get("pass_rate")), str(d.get("suite", "")), d.get("path"), int(d.get("cases", 0)),
                   {str(k): opt(v) for k, v in (d.get("by_type") or {}).items()},
                   {str(k): CaseCount.from_dict(v) for k, v in (d.get("counts") or {}).items()},
                   tuple(Regression.from_dict(r) for r in d.get("regressions") or ()),
                   tuple(str(x) for x in d.get("failed") or ()))


@dataclass(frozen=True)
class BatchQuality:
    """Accuracy and macro-F1 of the predictions made in batches of `batch_size` (a timed batch size), how many of
    them equal the predictions made in evaluation batches (`same_as_eval`, a share), and their paired-bootstrap
    deltas against the baseline's predictions at the same batch size. A model whose output depends on the batch
    (dynamic int8: activation scales per batch, pad positions included) scores differently here."""

    batch_size: int
    accuracy: float
    f1_macro: float
    same_as_eval: float = 1.0
    deltas: Mapping[str, Interval] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BatchQuality:
        return cls(int(d["batch_size"]), num(d.get("accuracy")), num(d.get("f1_macro")), num(d.get("same_as_eval"), 1.0),
                   {str(k): Interval.from_dict(v) for k, v in (d.get("deltas") or {}).items()})


@dataclass(frozen=True)
class MeasuredSpeedup:
    """Baseline time / variant time over interleaved rounds at one batch size, with its bootstrap interval; `verdict`
    is faster, slower or "no measurable difference". `optikit.harness.compare.speedup` is what consumers read."""

    batch_size: int
    ratio: float
    low: float
    high: float
    rounds: int
    verdict: str

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MeasuredSpeedup:
        from optikit.harness.significance import speedup_verdict

        low, high = num(d.get("low")), num(d.get("high"))
        return cls(int(d["batch_size"]), num(d["ratio"]), low, high, int(d.get("rounds", 0)),
                   str(d.get("verdict") or speedup_verdict(low, high)))


@dataclass(frozen=True)
class Diagnostics:
    """The operators a variant runs, and how many of its compute operators are quantized."""

    ops: Mapping[str, int] = field(default_factory=dict)
    quantized_ops: int = 0
    float_ops: int = 0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Diagnostics:
        return cls({str(k): int(v) for k, v in (d.get("ops") or {}).items()}, int(d.get("quantized_ops", 0)),
                   int(d.get("float_ops", 0)))


@dataclass(frozen=True)
class RunnerInfo:
    """The runtime a variant was measured with."""

    backend: str
    threads: int
    device: str
    providers: tuple[str, ...] = ()
    precision: str = ""  # the precision the runtime really compiled (OpenVINO: f32 or bf16); empty: not reported
    version: str = ""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunnerInfo:
        return cls(str(d.get("backend", "?")), int(d.get("threads", 0)), str(d.get("device", "cpu")),
                   tuple(d.get("providers") or ()), str(d.get("precision") or ""), str(d.get("version") or ""))

    def to_dict(self) -> dict[str, Any]:
        d = fields_of(self)
        for key in ("providers", "precision", "version"):  # written only where a runtime reports them
            if not d[key]:
                del d[key]
        return d


@dataclass(frozen=True)
class CpuInfo:
    model: str
    machine: str = ""
    int8_flags: Mapping[str, bool] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CpuInfo:
        return cls(str(d.get("model", "?")), str(d.get("machine", "")), dict(d.get("int8_flags") or {}))


@dataclass(frozen=True)
class Environment:
    """What a reader needs to interpret latency: CPU and its int8 instruction sets, threads, device, versions.

    `gpu` is what a CUDA request found (requested, available, name, note, …): free-form by design, as each
    device reports different facts."""

    cpu: CpuInfo
    threads: int
    device: str = "cpu"
    cpu_count: int | None = None
    gpu: Mapping[str, Any] = field(default_factory=dict)
    python: str = ""
    platform: str = ""
    onnxruntime_providers: tuple[str, ...] = ()
    versions: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Environment:
        return cls(CpuInfo.from_dict(d.get("cpu") or {}), int(d.get("threads", 0)), str(d.get("device", "cpu")),
                   d.get("cpu_count"), dict(d.get("gpu") or {}), str(d.get("python", "")), str(d.get("platform", "")),
                   tuple(d.get("onnxruntime_providers") or ()), {str(k): str(v) for k, v in (d.get("versions") or {}).items()})


@dataclass(frozen=True)
class Task:
    """What every variant was measured on: the task kind, label names, which split and how many examples, where the
    data came from (`data`: the baseline's data spec as recorded), how the test set was chosen, the notes a reader
    must see, and the size of each slice."""

    kind: str
    label_names: tuple[str, ...]
    split: str = "test"
    examples: int = 0
    data: Mapping[str, Any] = field(default_factory=dict)
    split_rule: str | None = None
    notes: tuple[str, ...] = ()
    slices: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Task:
        # {} when no cell of a matrix group was measured: nothing is known of the task.
        return cls(str(d.get("kind", "?")), tuple(str(x) for x in d.get("label_names") or ()), str(d.get("split", "test")),
                   int(d.get("examples", 0)), dict(d.get("data") or {}), d.get("split_rule"),
                   tuple(str(n) for n in d.get("notes") or ()), {str(k): int(v) for k, v in (d.get("slices") or {}).items()})

    def to_dict(self) -> dict[str, Any]:
        d = fields_of(self)
        if self.split_rule is None:  # written only by versions that knew it
            del d["split_rule"]
        return d
