"""quantize mode=auto: which ONNX Runtime int8 recipe fits this graph on this CPU, and a short timed trial where
neither the graph nor the CPU decides.

The graph decides the method: dynamic int8 convolutions (ConvInteger) have no fast kernel, so a convolutional
network is quantized statically, and a transformer (its MatMuls) dynamically, without calibration data. The CPU
decides the number formats: full-range weights with a u8×s8 dot-product instruction (VNNI, AMX), 7-bit weights
without one; uint8 activations on x86 (its int8 GEMMs are u8×s8) and int8 activations on ARM with the dot-product
extension (s8×s8 native there). What neither decides is which layers gain from int8: on a small CNN at batch 1
the quantize/dequantize steps around a cheap layer (a 1-channel stem, a small classifier head) cost more than its
int8 kernel saves (measured on the digits CNN: all layers int8 ran 0.85-0.91× its fp32 parent at batch 1, the
convolutions after the stem 1.2×). So for a static graph auto builds the few candidate layer sets, checks each
on the validation split, times each against the fp32 parent at batch 1 and 32 on calibration inputs (interleaved
rounds, medians), and keeps the fastest within the accuracy budget that is slower than the parent nowhere.
"""
from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from optikit.cpu import CpuFeatures

TRIAL_BATCH_SIZES = (1, 32)
TRIAL_ROUNDS = 7
ONE_THREAD = "@1-thread"  # a trial row's suffix: the candidate timed on one intra-op thread
TIE = 1.05  # candidates within 5% of the fastest count as equally fast (the more quantized one is kept)
STEM_CHANNELS = 4  # a first convolution reading at most this many channels is an image stem (RGB, grey)


@dataclass(frozen=True)
class NumberFormats:
    """What the CPU decides: the weight range and the activation type, each with its reason."""

    reduce_range: bool
    reduce_range_reason: str
    activation_type: str
    activation_reason: str

    def to_report(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def number_formats(cpu: CpuFeatures, reduce_range_setting: str = "auto") -> NumberFormats:
    flags = cpu.int8_flags()
    if reduce_range_setting != "auto":
        reduce, why = reduce_range_setting == "true", "set by the user"
    elif cpu.vnni:
        found = [n for n in ("amx_int8", "avx512_vnni", "avx_vnni") if flags[n]]
        reduce, why = False, f"the CPU has {'/'.join(found)}: full 8-bit weights"
    elif cpu.machine.lower() in ("arm64", "aarch64"):
        reduce, why = False, "ARM int8 kernels do not saturate: full 8-bit weights"
    else:
        reduce, why = True, "the CPU has no VNNI: 7-bit weights avoid int16 saturation in AVX2/AVX-512 kernels"
    if flags["dotprod"]:
        act, act_why = "int8", "ARM dot-product (sdot) multiplies int8 × int8 natively"
    else:
        act, act_why = "uint8", "x86 int8 GEMMs multiply uint8 activations by int8 weights (S8S8 is converted)"
    return NumberFormats(reduce, why, act, act_why)


@dataclass(frozen=True)
class Candidate:
    """One int8 recipe auto may pick: the quantized op types and the nodes left in fp32."""

    name: str
    op_types: tuple[str, ...]
    exclude_nodes: tuple[str, ...]
    description: str


def static_candidates(graph: Path, op_types: Sequence[str], user_chose_layers: bool) -> list[Candidate]:
    """The layer sets worth timing for a convolutional graph; one (the user's) when they named ops or nodes."""
    everything = Candidate("all", tuple(op_types), (), f"int8 {'/'.join(op_types)}")
    if user_chose_layers or "Conv" not in op_types:
        return [everything]
    stem = _stem_conv(graph)
    convs_only = Candidate("convolutions", ("Conv",), (), "int8 convolutions, fp32 MatMul/Gemm")
    out = [everything, convs_only]
    if stem is not None:
        out += [Candidate("all-but-stem", tuple(op_types), (stem,), f"int8 {'/'.join(op_types)}, the stem conv fp32"),
                Candidate("convolutions-but-stem", ("Conv",), (stem,),
                          "int8 convolutions after the stem, stem and MatMul/Gemm fp32")]
    return out


def _stem_conv(graph: Path) -> str | None:
    """The first Conv when it reads the graph input with few channels (an image stem), else None."""
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    inputs = {i.name: i for i in model.graph.input}
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        source = inputs.get(node.input[0])
        if source is None:
            return None
        dims = source.type.tensor_type.shape.dim
        channels = dims[1].dim_value if len(dims) > 1 else 0
        return node.name if 0 < channels <= STEM_CHANNELS else None
    return None


@dataclass(frozen=True)
class TrialRow:
    """One candidate's trial: validation accuracy and speedups over the fp32 parent by batch size."""

    name: str
    description: str
    accuracy: float
    loss: float
    speedups: Mapping[int, float]
    threads: int = 0  # intra-op threads it was timed with (0: as many as the parent)

    def slower_somewhere(self) -> bool:
        return any(s < 1.0 for s in self.speedups.values())

    def score(self) -> float:
        """Geometric mean of the speedups: no batch size dominates the choice."""
        values = [s for s in self.speedups.values() if s > 0]
        return math.exp(sum(math.log(s) for s in values) / len(values)) if values else 0.0

    def to_report(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "accuracy": round(self.accuracy, 6),
                "loss": round(self.loss, 6), "speedup": {str(b): round(s, 3) for b, s in self.speedups.items()},
                **({"threads": self.threads} if self.threads else {})}


def choose(rows: Sequence[TrialRow], max_loss: float) -> tuple[TrialRow, str]:
    """The fastest candidate within `max_loss` that is slower than the parent at no batch size; failing that the
    fastest within budget, failing that the most accurate. The reason says which rule decided.

    `rows` come most-quantized first (smallest file): a later one is kept only when it is more than TIE faster, so
    timing noise between near-equal candidates does not trade size away."""
    within = [r for r in rows if r.loss <= max_loss + 1e-12]
    never_slower = [r for r in within if not r.slower_somewhere()]
    if never_slower:
        fastest = max(r.score() for r in never_slower)
        best = next(r for r in never_slower if r.score() >= fastest / TIE)
        return best, f"the fastest of {len(rows)} timed candidates within {max_loss:g} accuracy, faster than fp32 at " \
                     f"every batch size ({_speedups(best)})"
    if within:
        fastest = max(r.score() for r in within)
        best = next(r for r in within if r.score() >= fastest / TIE)
        return best, (f"every candidate within {max_loss:g} accuracy is slower than fp32 at some batch size on this "
                      f"machine; kept the fastest ({_speedups(best)})")
    best = min(rows, key=lambda r: (r.loss, -r.score()))
    return best, (f"no candidate stays within {max_loss:g} accuracy; kept the most accurate (loss {best.loss:.4f}, "
                  f"{_speedups(best)})")


def _speedups(row: TrialRow) -> str:
    return ", ".join(f"{s:.2f}× at batch {b}" for b, s in sorted(row.speedups.items()))


def trial_feeds(batches: Sequence[Mapping[str, np.ndarray]], batch_sizes: Sequence[int] = TRIAL_BATCH_SIZES
                ) -> dict[int, dict[str, np.ndarray]]:
    """One input per trial batch size, cut from the calibration batches (a size the data cannot fill is skipped)."""
    if not batches:
        return {}
    joined = {k: _pad_join([b[k] for b in batches]) if batches[0][k].ndim == 2 else np.concatenate([b[k] for b in batches])
              for k in batches[0]}
    available = len(next(iter(joined.values())))
    return {size: {k: np.ascontiguousarray(v[:size]) for k, v in joined.items()}
            for size in batch_sizes if size <= available}


def _pad_join(parts: list[np.ndarray]) -> np.ndarray:
    """Token arrays of different lengths, right-padded with zeros to the longest (mask zeros are padding)."""
    width = max(p.shape[1] for p in parts)
    return np.concatenate([np.pad(p, ((0, 0), (0, width - p.shape[1]))) for p in parts])


def time_against_parent(parent: Path, candidates: Mapping[str, Path], feeds: Mapping[int, dict[str, np.ndarray]],
                        threads: int, seconds: float, rounds: int = TRIAL_ROUNDS,
                        clock: Callable[[], float] = time.perf_counter,
                        candidate_threads: Mapping[str, int] | None = None) -> dict[str, dict[int, float]]:
    """Speedup of each candidate over the parent at each batch size: median per-call time over interleaved
    rounds (each round runs every model in turn, so a moment of load falls on all of them alike). The parent
    runs on `threads`; a candidate on its `candidate_threads` entry where it has one."""
    from optikit.passes._ort_quant import open_session

    own = candidate_threads or {}
    sessions = {"": open_session(parent, threads),
                **{n: open_session(p, own.get(n, threads)) for n, p in candidates.items()}}
    out: dict[str, dict[int, float]] = {n: {} for n in candidates}
    for size, feed in feeds.items():
        calls = {name: _bind(session, feed) for name, session in sessions.items()}
        for call in calls.values():  # warm-up: first runs allocate and pick kernels
            call(), call()
        start = clock()
        calls[""]()
        per_call = max(clock() - start, 1e-6)
        repeat = max(1, int(seconds / rounds / per_call / len(calls)))
        times: dict[str, list[float]] = {n: [] for n in calls}
        for _ in range(rounds):
            for name, call in calls.items():
                start = clock()
                for _ in range(repeat):
                    call()
                times[name].append((clock() - start) / repeat)
        parent_median = float(np.median(times[""]))
        for name in candidates:
            out[name][size] = parent_median / float(np.median(times[name]))
    return out


def _bind(session: Any, feed: Mapping[str, np.ndarray]) -> Callable[[], Any]:
    names = [i.name for i in session.get_inputs()]
    arrays = {k: feed[k] for k in names if k in feed}
    return lambda: session.run(None, arrays)


@dataclass(frozen=True)
class TrialOutcome:
    chosen: Candidate
    rows: tuple[TrialRow, ...]
    reason: str
    threads: int = 0  # intra-op threads the chosen candidate runs fastest with, where fewer than asked; 0: as asked

    def to_report(self, max_loss: float, threads: int) -> dict[str, Any]:
        from optikit.cpu import cpu_features

        return {"chosen": self.chosen.name, "reason": self.reason, "max_loss": max_loss, "threads": threads,
                **({"intra_op_threads": self.threads} if self.threads else {}),
                "cpu": cpu_features().model, "candidates": [r.to_report() for r in self.rows]}


def run_trial(candidates: Sequence[Candidate], build: Callable[[Path, Candidate], None], parent: Path, workdir: Path,
              accuracy_of: Callable[[Path], float], baseline_accuracy: float,
              feeds: Mapping[int, dict[str, np.ndarray]], threads: int, seconds: float, max_loss: float) -> TrialOutcome:
    """Builds every candidate in `workdir`, scores it on the validation split and times it against `parent`."""
    paths = {c.name: workdir / f"model.trial-{c.name}.onnx" for c in candidates}
    # Each candidate also on one thread: ONNX Runtime's int8 kernels split small layers badly (measured on the
    # digits CNN at batch 32: int8 303 µs/call on 1 thread, 344 µs on 2, while fp32 went 552 → 385 µs).
    timed = {f"{c.name}{ONE_THREAD if t < threads else ''}": (c, t) for c in candidates
             for t in ((threads, 1) if threads > 1 else (threads,))}
    try:
        for c in candidates:
            build(paths[c.name], c)
        accuracy = {c.name: accuracy_of(paths[c.name]) for c in candidates}
        speedups = time_against_parent(parent, {k: paths[c.name] for k, (c, _) in timed.items()}, feeds, threads,
                                       seconds, candidate_threads={k: t for k, (_, t) in timed.items()})
    finally:
        for path in paths.values():
            path.unlink(missing_ok=True)
    rows = tuple(TrialRow(k, c.description + (" on 1 thread" if t < threads else ""), accuracy[c.name],
                          baseline_accuracy - accuracy[c.name], speedups[k], t if t < threads else 0)
                 for k, (c, t) in timed.items())
    best, reason = choose(rows, max_loss)
    return TrialOutcome(timed[best.name][0], rows, reason, best.threads)


def layer_trial(seconds: float, c: Any, variant: Any, ctx: Any, source: Path, prepared: Path, ops: list[str],
                batches: list[dict[str, np.ndarray]], build: Callable[[Path, list[str], list[str]], None]
                ) -> tuple[Any, list[str], dict[str, Any] | None]:
    """mode=auto on a static graph: which layers to make int8, by a timed trial. `c` is the resolved static
    config (returned with the chosen op types and fp32 nodes), `build(path, op_types, fp32_nodes)` quantizes."""
    from optikit.models import Encoder
    from optikit.passes._ort_quant import DEFAULT_TRIAL_LOSS, EVAL_BATCH, session_logits
    from optikit.progress import say

    user_chose = bool(c.op_types or c.exclude_op_types or c.exclude_nodes)
    candidates = static_candidates(prepared, ops, user_chose)
    feeds = trial_feeds(batches)
    if seconds == 0 or len(candidates) < 2 or not feeds:
        return c, ops, None
    data = ctx.split(variant, "validation")
    val_batches = Encoder(variant).batches(data, EVAL_BATCH)
    baseline = float(np.mean(session_logits(source, val_batches, ctx.threads).argmax(-1) == data.labels))

    def accuracy_of(path: Path) -> float:
        return float(np.mean(session_logits(path, val_batches, ctx.threads).argmax(-1) == data.labels))

    budget = c.max_loss if c.max_loss is not None else DEFAULT_TRIAL_LOSS
    say(f"quantize: timing {len(candidates)} int8 layer sets against the fp32 graph (~{seconds:g} s each per batch size)")
    outcome = run_trial(candidates, lambda path, cand: build(path, list(cand.op_types), [*c.exclude_nodes,
                                                                                        *cand.exclude_nodes]),
                        source, prepared.parent, accuracy_of, baseline, feeds, ctx.threads, seconds, budget)
    on = f", on {outcome.threads} intra-op thread" if outcome.threads else ""
    say(f"quantize: kept {outcome.chosen.description}{on}: {outcome.reason}")
    chosen = dataclasses.replace(c, op_types=outcome.chosen.op_types,
                                 exclude_nodes=(*c.exclude_nodes, *outcome.chosen.exclude_nodes))
    return chosen, chosen.op_types_to_quantize(), outcome.to_report(budget, ctx.threads)
