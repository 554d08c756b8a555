"""Behavioural suites (CheckList): MFT / INV / DIR cases from a TOML file, run on every variant, regressions vs baseline.

File format (TOML, one file per task; see optikit/suites/minilm-tags.toml):
    [suite]  name, kind ("text" | "image"), labels (optional: the label names it is written for), description
    [[case]] id, type = "mft" | "inv" | "dir", text, description (optional) and
             mft: label            the prediction on `text` must be `label`
             inv: perturbed = […]  every perturbed text keeps the prediction made on `text`
             dir: perturbed = […], toward = LABEL   P(toward) on every perturbed text ≥ P(toward) on `text`
Image suites hold generator parameters under [generate] (see optikit/suites/digits.toml and images.toml): their
cases are built from the data at run time, so the file stays small and the cases follow the data. `images` is the
suite `suite=auto` runs on every image task but digits: small shifts, Gaussian noise and brightness changes (INV,
on [0, 1] pixels, clipped) and, where the class means represent their classes, prototypes (MFT).
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np

from optikit.errors import ConfigError
from optikit.harness.records import Behavioral, CaseCount, Regression

CaseType = Literal["mft", "inv", "dir"]
TYPES: tuple[CaseType, ...] = ("mft", "inv", "dir")
BUILTIN = {"minilm-tags": "minilm-tags.toml", "digits": "digits.toml", "images": "images.toml"}
_GENERATE_KEYS = {"seed", "prototypes", "prototype_min_accuracy", "shift_examples", "shift_pixels", "shift_fraction",
                  "noise_examples", "noise_std", "noise_copies", "brightness_examples", "brightness_factors"}


@dataclass(frozen=True)
class Case:
    """One check; `original` and `perturbed` index into the suite's input list."""

    id: str
    type: CaseType
    description: str
    original: int
    perturbed: tuple[int, ...] = ()
    label: int | None = None  # mft
    toward: int | None = None  # dir


@dataclass(frozen=True)
class Suite:
    name: str
    path: str
    cases: tuple[Case, ...]
    inputs: Any  # list[str] for text, np.ndarray (m, 1, H, W) for images


def suite_path(spec: str) -> Path:
    """A built-in suite name or a file path."""
    if spec in BUILTIN:
        return Path(str(resources.files("optikit.suites").joinpath(BUILTIN[spec])))
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ConfigError(f"suite {spec!r} is neither a file nor a built-in suite ({', '.join(BUILTIN)})")
    return path


def auto_suite(kind: str, label_names: tuple[str, ...], source: str) -> str | None:
    """The built-in suite written for this task, if any: digits for digits, images for any other image task,
    minilm-tags for the tags labels."""
    if kind == "image":
        return "digits" if source == "digits" else "images"
    if kind == "text" and set(label_names) == {"computer-vision", "mlops", "natural-language-processing", "other"}:
        return "minilm-tags"
    return None


def load_suite(spec: str, label_names: tuple[str, ...], data: Any = None, train_idx: Any = None,
               test: Any = None) -> Suite:
    """Reads a suite file; image suites need the full data, its train indices and the test split to generate cases."""
    path = suite_path(spec)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"suite file {path} is not valid TOML: {exc}") from None
    head, cases = doc.get("suite", {}), doc.get("case", [])
    if not isinstance(head, dict) or not isinstance(cases, list) or not all(isinstance(c, dict) for c in cases):
        raise ConfigError(f"suite file {path}: [suite] must be a table and each case a [[case]] table "
                          "(see optikit/suites/minilm-tags.toml)")
    if not cases and "generate" not in doc:
        raise ConfigError(f"suite file {path} holds no cases: add [[case]] tables (see "
                          "optikit/suites/minilm-tags.toml) or a [generate] table for images, or drop --suite")
    name = str(head.get("name", path.stem))
    if "generate" in doc:
        if data is None or getattr(data, "kind", None) != "image":
            raise ConfigError(f"suite {name} generates image cases: bench it on image data")
        return _generated(name, str(path), doc["generate"], label_names, data, train_idx, test)
    return _written(name, str(path), cases, label_names)


def _label(value: Any, label_names: tuple[str, ...], where: str) -> int:
    if str(value) not in label_names:
        raise ConfigError(f"{where} names label {value!r}; the task's labels are {', '.join(label_names)}")
    return label_names.index(str(value))


def _written(name: str, path: str, raw: list[dict[str, Any]], label_names: tuple[str, ...]) -> Suite:
    inputs: list[str] = []
    index: dict[str, int] = {}

    def add(text: Any) -> int:
        text = str(text)
        if text not in index:
            index[text] = len(inputs)
            inputs.append(text)
        return index[text]

    cases, seen = [], set()
    for i, c in enumerate(raw):
        where = f"suite {name} case {c.get('id', i)!r}"
        unknown = set(c) - {"id", "type", "description", "text", "perturbed", "label", "toward"}
        if unknown:
            raise ConfigError(f"{where} has unknown keys {sorted(unknown)}")
        kind, cid = c.get("type"), str(c.get("id", f"case-{i}"))
        if kind not in TYPES or "text" not in c:
            raise ConfigError(f"{where} needs type = mft|inv|dir and a text")
        if cid in seen:
            raise ConfigError(f"{where}: duplicate id")
        seen.add(cid)
        perturbed = c.get("perturbed", [])
        perturbed = [perturbed] if isinstance(perturbed, str) else list(perturbed)
        if kind == "mft" and "label" not in c:
            raise ConfigError(f"{where} is an mft case: give its label")
        if kind in ("inv", "dir") and not perturbed:
            raise ConfigError(f"{where} is an {kind} case: give perturbed texts")
        if kind == "dir" and "toward" not in c:
            raise ConfigError(f"{where} is a dir case: give the label it moves `toward`")
        cases.append(Case(cid, kind, str(c.get("description", _describe(kind, c))), add(c["text"]),
                          tuple(add(t) for t in perturbed),
                          _label(c["label"], label_names, where) if kind == "mft" else None,
                          _label(c["toward"], label_names, where) if kind == "dir" else None))
    return Suite(name, path, tuple(cases), inputs)


def _describe(kind: str, c: dict[str, Any]) -> str:
    text = str(c["text"])[:80]
    return {"mft": f"{text!r} → {c.get('label')}", "inv": f"perturbations of {text!r} keep the prediction",
            "dir": f"additions to {text!r} move toward {c.get('toward')}"}[kind]


def shift(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Moves the image content by (dy, dx) pixels, filling with background (0) rather than wrapping around."""
    out = np.zeros_like(image)
    h, w = image.shape[-2:]
    src = image[..., max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)]
    out[..., max(0, dy):max(0, dy) + src.shape[-2], max(0, dx):max(0, dx) + src.shape[-1]] = src
    return out


def _generated(name: str, path: str, params: dict[str, Any], label_names: tuple[str, ...], data: Any,
               train_idx: Any, test: Any) -> Suite:
    unknown = set(params) - _GENERATE_KEYS
    if unknown:
        raise ConfigError(f"suite {name} [generate] has unknown keys {sorted(unknown)}; known: {sorted(_GENERATE_KEYS)}")
    rng = np.random.default_rng(int(params.get("seed", 0)))
    images: list[np.ndarray] = []
    cases: list[Case] = []

    def add(image: np.ndarray) -> int:
        images.append(np.asarray(image, dtype=np.float32))
        return len(images) - 1

    train = np.asarray(train_idx if train_idx is not None else [], dtype=int)
    prototypes = params.get("prototypes", True)
    if prototypes not in (True, False, "auto"):
        raise ConfigError(f"suite {name} [generate] prototypes must be true, false or \"auto\", got {prototypes!r}")
    if prototypes == "auto":
        prototypes = centroid_accuracy(data.inputs[train], data.labels[train], len(label_names)) >= float(
            params.get("prototype_min_accuracy", 0.75))
    if prototypes:
        for k, label in enumerate(label_names):
            members = train[data.labels[train] == k]
            if len(members):
                cases.append(Case(f"mft-prototype-{label}", "mft", f"the mean training image of {label} is {label}",
                                  add(data.inputs[members].mean(0)), label=k))
    pick = lambda count: rng.choice(len(test), size=min(int(count), len(test)), replace=False)  # noqa: E731
    side = min(test.inputs.shape[-2:]) if len(test) else 1
    pixels = int(params["shift_pixels"]) if "shift_pixels" in params else max(
        1, round(float(params.get("shift_fraction", 0.0)) * side))
    for i in pick(params.get("shift_examples", 10)):
        original = test.inputs[i]
        moved = tuple(add(shift(original, dy, dx)) for dy, dx in ((0, -pixels), (0, pixels), (-pixels, 0), (pixels, 0)))
        cases.append(Case(f"inv-shift-{i}", "inv", f"test image #{i} shifted by {pixels} pixel(s) each way",
                          add(original), moved))
    std, copies = float(params.get("noise_std", 0.05)), int(params.get("noise_copies", 3))
    for i in pick(params.get("noise_examples", 10)):
        original = test.inputs[i]
        noisy = tuple(add(np.clip(original + rng.normal(0, std, original.shape), 0, 1)) for _ in range(copies))
        cases.append(Case(f"inv-noise-{i}", "inv", f"test image #{i} with Gaussian noise (std {std:g})",
                          add(original), noisy))
    factors = [float(f) for f in params.get("brightness_factors", (0.8, 1.2))]
    if int(params.get("brightness_examples", 0)) and factors:  # after noise: digits' cases keep their draws
        for i in pick(params["brightness_examples"]):
            original = test.inputs[i]
            changed = tuple(add(brightness(original, f)) for f in factors)
            cases.append(Case(f"inv-brightness-{i}", "inv", f"test image #{i} with brightness × "
                              f"{', '.join(f'{f:g}' for f in factors)}", add(original), changed))
    return Suite(name, path, tuple(cases), np.stack(images).astype(np.float32))


def brightness(image: np.ndarray, factor: float) -> np.ndarray:
    """Scales the pixels by `factor` (PIL's ImageEnhance.Brightness: a blend with black), clipped to [0, 1]."""
    return np.clip(image * factor, 0.0, 1.0).astype(np.float32)


def centroid_accuracy(images: np.ndarray, labels: np.ndarray, classes: int) -> float:
    """Leave-one-out accuracy of nearest-class-mean in pixel space: high when each class's mean image looks like its
    members (aligned digits, centred shapes), so predicting a class from its mean image is a fair test; natural
    photos average to blurs that no model needs to recognise. Each image is compared with its own class's mean
    *without it* — with it, a few hundred pixels per image let any class mean "recognise" its own members."""
    if len(images) == 0:
        return 0.0
    flat = images.reshape(len(images), -1).astype(np.float64)
    present = np.array([k for k in range(classes) if np.any(labels == k)])
    counts = np.array([np.sum(labels == k) for k in present], dtype=np.float64)
    means = np.stack([flat[labels == k].mean(0) for k in present])
    distances = (flat ** 2).sum(1)[:, None] - 2 * flat @ means.T + (means ** 2).sum(1)[None, :]
    own = np.searchsorted(present, labels)
    # x − mean without x = n/(n−1)·(x − mean): the squared distance grows by (n/(n−1))²; a lone image has no peer.
    n = counts[own]
    scale = np.where(n > 1, (n / np.maximum(n - 1, 1)) ** 2, np.inf)
    distances[np.arange(len(flat)), own] *= scale
    return float(np.mean(present[distances.argmin(1)] == labels))


def case_outcomes(suite: Suite, probs: np.ndarray) -> dict[str, bool]:
    """Pass or fail of every case given the model's probabilities on the suite's inputs."""
    preds = probs.argmax(-1)
    out = {}
    for c in suite.cases:
        if c.type == "mft":
            out[c.id] = bool(preds[c.original] == c.label)
        elif c.type == "inv":
            out[c.id] = bool(all(preds[j] == preds[c.original] for j in c.perturbed))
        else:
            out[c.id] = bool(all(probs[j, c.toward] >= probs[c.original, c.toward] for j in c.perturbed))
    return out


def behavioral(suite: Suite, outcomes: dict[str, bool], baseline: dict[str, bool] | None) -> Behavioral:
    """The `behavioral` record: pass rates overall and per type, and the cases the baseline passes but this fails."""
    by_type: dict[str, float | None] = {}
    counts: dict[str, CaseCount] = {}
    for t in TYPES:
        ids = [c.id for c in suite.cases if c.type == t]
        passed = sum(outcomes[i] for i in ids)
        by_type[t] = passed / len(ids) if ids else None
        counts[t] = CaseCount(len(ids), passed)
    regressions = () if baseline is None else tuple(
        Regression(c.id, c.type, c.description) for c in suite.cases if baseline.get(c.id) and not outcomes[c.id])
    total = len(suite.cases)
    return Behavioral(pass_rate=sum(outcomes.values()) / total if total else None, suite=suite.name,
                      path=suite.path, cases=total, by_type=by_type,
                      counts=counts, regressions=regressions,
                      failed=tuple(cid for cid, ok in outcomes.items() if not ok))
