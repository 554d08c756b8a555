"""Significance: paired bootstrap intervals of every metric delta against the baseline, and McNemar's exact test."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from optikit.config import require
from optikit.harness.metrics import confidence_bins, resampled_ece
from optikit.harness.records import Interval, McNemar, Significance

METRICS = ("accuracy", "f1_macro", "f1_weighted", "log_loss", "brier", "ece")
_CHUNK = 256  # resamples evaluated at once: bounds memory at _CHUNK × n indices


@dataclass(frozen=True)
class SignificanceConfig:
    resamples: int = 1000
    seed: int = 0
    confidence: float = 0.95

    def __post_init__(self) -> None:
        require(self.resamples >= 20, f"resamples must be ≥ 20, got {self.resamples}")
        require(0.5 < self.confidence < 1.0, f"confidence must be in (0.5, 1), got {self.confidence}")


@dataclass(frozen=True)
class _PerExample:
    """What every metric needs per example, so a resample is only an index array."""

    labels: np.ndarray
    preds: np.ndarray
    correct: np.ndarray
    loss: np.ndarray
    brier: np.ndarray
    confidence: np.ndarray
    bin: np.ndarray
    classes: int

    @classmethod
    def of(cls, labels: np.ndarray, probs: np.ndarray) -> _PerExample:
        labels = np.asarray(labels, dtype=np.int64)
        preds = probs.argmax(-1)
        onehot = np.eye(probs.shape[1])[labels]
        confidence = probs.max(-1)
        bins = confidence_bins(confidence)
        return cls(labels, preds, (preds == labels).astype(float),
                   -np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0)),
                   np.sum((probs - onehot) ** 2, axis=1), confidence, bins, probs.shape[1])


def _f1(ex: _PerExample, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Macro and weighted F1 for each row of `idx` (resamples × n) from batched confusion matrices."""
    k, rows = ex.classes, idx.shape[0]
    keys = (np.arange(rows)[:, None] * k * k + ex.labels[idx] * k + ex.preds[idx]).ravel()
    cm = np.bincount(keys, minlength=rows * k * k).reshape(rows, k, k).astype(float)
    tp = np.diagonal(cm, axis1=1, axis2=2)
    support, predicted = cm.sum(2), cm.sum(1)
    denom = support + predicted
    # 2tp / (support + predicted) is F1; a class absent from both counts as 0, like sklearn's zero_division=0.
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return f1.mean(1), (f1 * support).sum(1) / support.sum(1)


def metric_table(ex: _PerExample, idx: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric of METRICS for each row of `idx`."""
    f1_macro, f1_weighted = _f1(ex, idx)
    return {"accuracy": ex.correct[idx].mean(1), "f1_macro": f1_macro, "f1_weighted": f1_weighted,
            "log_loss": ex.loss[idx].mean(1), "brier": ex.brier[idx].mean(1),
            "ece": resampled_ece(ex.bin, ex.correct, ex.confidence, idx)}


def point_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    ex = _PerExample.of(labels, probs)
    return {k: float(v[0]) for k, v in metric_table(ex, np.arange(len(labels))[None, :]).items()}


def bootstrap_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """The resample index matrix: one seeded generator, so every variant is compared on the same resamples."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def paired_bootstrap(labels: np.ndarray, base_probs: np.ndarray, probs: np.ndarray,
                     config: SignificanceConfig = SignificanceConfig()) -> dict[str, Interval]:
    """Delta (variant − baseline) of each metric with a percentile interval over paired resamples of examples.

    Paired: both models are scored on the same resampled examples, so the interval reflects the difference
    between the models, not the (much larger) sampling noise of each metric on its own.
    """
    n = len(labels)
    base, var = _PerExample.of(labels, base_probs), _PerExample.of(labels, probs)
    full = np.arange(n)[None, :]
    point = {k: float(v[0] - metric_table(base, full)[k][0]) for k, v in metric_table(var, full).items()}
    idx_all = bootstrap_indices(n, config.resamples, config.seed)
    deltas: dict[str, list[np.ndarray]] = {k: [] for k in METRICS}
    for start in range(0, config.resamples, _CHUNK):
        idx = idx_all[start:start + _CHUNK]
        b, v = metric_table(base, idx), metric_table(var, idx)
        for k in METRICS:
            deltas[k].append(v[k] - b[k])
    tail = (1 - config.confidence) / 2 * 100
    out = {}
    for k in METRICS:
        low, high = np.percentile(np.concatenate(deltas[k]), [tail, 100 - tail])
        out[k] = interval(point[k], float(low), float(high))
    return out


def interval(delta: float, low: float, high: float) -> Interval:
    # Significant only when the interval excludes zero; a zero-width interval at 0 (identical models) is not.
    return Interval.of(delta, low, high)


def mcnemar(labels: np.ndarray, base_preds: np.ndarray, preds: np.ndarray) -> McNemar:
    """McNemar's exact test on per-example correctness: b = right→wrong, c = wrong→right, p two-sided."""
    base_ok, ok = base_preds == labels, preds == labels
    b, c = int(np.sum(base_ok & ~ok)), int(np.sum(~base_ok & ok))
    return McNemar(b, c, mcnemar_exact_p(b, c))


def mcnemar_exact_p(b: int, c: int) -> float:
    """Under no difference, the discordant pairs split 50/50: an exact two-sided binomial test on min(b, c)."""
    from scipy.stats import binomtest

    if b + c == 0:
        return 1.0
    return float(binomtest(min(b, c), b + c, 0.5, alternative="two-sided").pvalue)


def significance(labels: np.ndarray, base_probs: np.ndarray, probs: np.ndarray,
                 config: SignificanceConfig = SignificanceConfig()) -> Significance:
    """The `significance` record of a variant: bootstrap deltas of every metric and McNemar's test."""
    return Significance(deltas=paired_bootstrap(labels, base_probs, probs, config),
                        mcnemar=mcnemar(labels, base_probs.argmax(-1), probs.argmax(-1)), seed=config.seed,
                        resamples=config.resamples, confidence=config.confidence)


def ratio_interval(base: np.ndarray, variant: np.ndarray, resamples: int = 2000, seed: int = 0,
                   confidence: float = 0.95) -> tuple[float, float, float]:
    """Speedup = median over rounds of (baseline time / variant time), with a bootstrap interval over rounds.

    Paired per round, so slow drift of the machine cancels; the median, so one round disturbed by another
    process does not move the figure.
    """
    base, variant = np.asarray(base, dtype=float), np.asarray(variant, dtype=float)
    require(len(base) == len(variant) and len(base) >= 2, "speedup needs ≥ 2 paired rounds")
    ratios = base / variant
    idx = bootstrap_indices(len(ratios), resamples, seed)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(np.median(ratios[idx], axis=1), [tail, 100 - tail])
    return float(np.median(ratios)), float(low), float(high)


def speedup_verdict(low: float, high: float) -> str:
    if low > 1.0:
        return "faster"
    if high < 1.0:
        return "slower"
    return "no measurable difference"


