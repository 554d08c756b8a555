"""Quality metrics: alignment (accuracy, P/R/F1), capability (log loss, Brier, ECE) and fidelity to a baseline."""
from __future__ import annotations

from typing import Any

import numpy as np

from optikit.harness.records import Alignment, Capability, ClassScores, Fidelity, Flip, ReliabilityBin


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def alignment(labels: np.ndarray, preds: np.ndarray, label_names: tuple[str, ...],
              per_slice: Any = None) -> Alignment:
    """Accuracy and precision / recall / F1 (macro, weighted, per class), computed by scikit-learn; `per_slice` is
    slices.per_slice's record, kept with them."""
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    classes = list(range(len(label_names)))
    avg: dict[str, float] = {}
    for kind in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(labels, preds, labels=classes, average=kind, zero_division=0)
        avg.update({f"precision_{kind}": float(p), f"recall_{kind}": float(r), f"f1_{kind}": float(f)})
    p, r, f, s = precision_recall_fscore_support(labels, preds, labels=classes, average=None, zero_division=0)
    return Alignment(accuracy=float(accuracy_score(labels, preds)), **avg,
                     per_class={name: ClassScores(float(p[i]), float(r[i]), float(f[i]), int(s[i]))
                                for i, name in enumerate(label_names)},
                     per_slice=per_slice or {})


ECE_BINS = 10


def confidence_bins(confidence: np.ndarray, bins: int = ECE_BINS) -> np.ndarray:
    """Each example's equal-width confidence bin: (low, high], the first closed at 0, so 1.0 lands in the last."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    return np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)


def resampled_ece(bin_of: np.ndarray, correct: np.ndarray, confidence: np.ndarray, idx: np.ndarray,
                  bins: int = ECE_BINS) -> np.ndarray:
    """The ECE of each row of `idx` (resamples × example indices): Σ_bins |Σ correct − Σ confidence| / n, which is
    Σ_bins count/n · |accuracy − confidence|."""
    rows, n = idx.shape
    keys = (np.arange(rows)[:, None] * bins + bin_of[idx]).ravel()
    acc = np.bincount(keys, weights=correct[idx].ravel(), minlength=rows * bins).reshape(rows, bins)
    conf = np.bincount(keys, weights=confidence[idx].ravel(), minlength=rows * bins).reshape(rows, bins)
    return np.abs(acc - conf).sum(1) / n


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray,
                               bins: int = ECE_BINS) -> tuple[float, list[ReliabilityBin]]:
    """ECE over equal-width confidence bins, and the bins themselves (for a reliability diagram)."""
    confidence = probs.max(axis=-1)
    correct = (probs.argmax(axis=-1) == labels).astype(float)
    bin_of = confidence_bins(confidence, bins)
    ece = float(resampled_ece(bin_of, correct, confidence, np.arange(len(labels))[None, :], bins)[0])
    edges = np.linspace(0.0, 1.0, bins + 1)
    table = []
    for i, (low, high) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        mask = bin_of == i
        count = int(mask.sum())
        acc, conf = (float(correct[mask].mean()), float(confidence[mask].mean())) if count else (0.0, 0.0)
        table.append(ReliabilityBin(float(low), float(high), count, acc, conf))
    return ece, table


def mean_kl(base_probs: np.ndarray, probs: np.ndarray) -> float:
    """KL(baseline ‖ variant) averaged over examples, probabilities clipped at 1e-12 (fidelity, and quantize's
    sensitivity of a node)."""
    p = np.clip(base_probs, 1e-12, 1.0)
    q = np.clip(probs, 1e-12, 1.0)
    return float(np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1)))


def capability(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> Capability:
    """Log loss, Brier score and ECE: how much probability the model puts on the truth, not only the argmax."""
    from sklearn.metrics import log_loss

    n_classes = probs.shape[1]
    onehot = np.eye(n_classes)[labels]
    ece, table = expected_calibration_error(probs, labels, bins)
    return Capability(log_loss=float(log_loss(labels, np.clip(probs, 1e-12, 1.0), labels=list(range(n_classes)))),
                      ece=ece, brier=float(np.mean(np.sum((probs - onehot) ** 2, axis=1))), reliability=tuple(table))


def per_example_log_loss(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    return -np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0))


def fidelity(labels: np.ndarray, base_probs: np.ndarray, probs: np.ndarray, texts: list[str] | None = None,
             max_flipped: int = 50) -> Fidelity:
    """Agreement with the baseline, flips (counts, matrix, the examples themselves) and mean KL(baseline ‖ variant)."""
    base_pred, pred = base_probs.argmax(-1), probs.argmax(-1)
    base_ok, ok = base_pred == labels, pred == labels
    k = base_probs.shape[1]
    matrix = np.bincount(base_pred * k + pred, minlength=k * k).reshape(k, k)
    return Fidelity(agreement=float(np.mean(base_pred == pred)), flips_right_to_wrong=int(np.sum(base_ok & ~ok)),
                    flips_wrong_to_right=int(np.sum(~base_ok & ok)), kl_mean=mean_kl(base_probs, probs),
                    flip_matrix=tuple(tuple(int(x) for x in row) for row in matrix),
                    flipped=tuple(flipped_examples(labels, base_pred, pred, texts, max_flipped)))


def flipped_examples(labels: np.ndarray, base_pred: np.ndarray, pred: np.ndarray, texts: list[str] | None,
                     limit: int) -> list[Flip]:
    """Every example whose prediction changed, right→wrong first (what a reader must look at), up to `limit`."""
    changed = np.flatnonzero(base_pred != pred)
    rows: list[Flip] = []
    for i in changed:
        kind = ("right_to_wrong" if base_pred[i] == labels[i] else
                "wrong_to_right" if pred[i] == labels[i] else "wrong_to_wrong")
        rows.append(Flip(int(i), texts[i] if texts is not None else f"example #{i}", int(labels[i]), int(base_pred[i]),
                         int(pred[i]), kind))
    order = {"right_to_wrong": 0, "wrong_to_right": 1, "wrong_to_wrong": 2}
    return sorted(rows, key=lambda r: (order[r.kind], r.index))[:limit]
