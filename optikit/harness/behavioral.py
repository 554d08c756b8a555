"""Behavioural suites (CheckList): MFT / INV / DIR cases from a TOML file, run on every variant, regressions vs baseline.

File format (TOML, one file per task; see optikit/suites/minilm-tags.toml):
    [suite]  name, kind ("text" | "image"), labels (optional: the label names it is written for), description
    [[case]] id, type = "mft" | "inv" | "dir", text, description (optional) and
             mft: label            the prediction on `text` must be `label`
             inv: perturbed = […]  every perturbed text keeps the prediction made on `text`
             dir: perturbed = […], toward = LABEL   P(toward) on every perturbed text ≥ P(toward) on `text`
Image suites hold generator parameters under [generate] (see optikit/suites/digits.toml): their cases are
built from the data at run time, so the file stays small and the cases follow the data.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np

from optikit.errors import ConfigError

CaseType = Literal["mft", "inv", "dir"]
TYPES: tuple[CaseType, ...] = ("mft", "inv", "dir")
BUILTIN = {"minilm-tags": "minilm-tags.toml", "digits": "digits.toml"}
_GENERATE_KEYS = {"seed", "prototypes", "shift_examples", "shift_pixels", "noise_examples", "noise_std", "noise_copies"}


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
    """The built-in suite written for this task, if any: digits for digits, minilm-tags for the tags labels."""
    if kind == "image" and source == "digits":
        return "digits"
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
    head = doc.get("suite", {})
    name = str(head.get("name", path.stem))
    if "generate" in doc:
        if data is None or getattr(data, "kind", None) != "image":
            raise ConfigError(f"suite {name} generates image cases: bench it on image data")
        return _generated(name, str(path), doc["generate"], label_names, data, train_idx, test)
    return _written(name, str(path), doc.get("case", []), label_names)


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

    if params.get("prototypes", True):
        train = np.asarray(train_idx, dtype=int)
        for k, label in enumerate(label_names):
            members = train[data.labels[train] == k]
            if len(members):
                cases.append(Case(f"mft-prototype-{label}", "mft", f"the mean training image of {label} is {label}",
                                  add(data.inputs[members].mean(0)), label=k))
    pick = lambda count: rng.choice(len(test), size=min(int(count), len(test)), replace=False)  # noqa: E731
    pixels = int(params.get("shift_pixels", 1))
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
    return Suite(name, path, tuple(cases), np.stack(images).astype(np.float32))


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


def behavioral(suite: Suite, outcomes: dict[str, bool], baseline: dict[str, bool] | None) -> dict[str, Any]:
    """The `behavioral` record: pass rates overall and per type, and the cases the baseline passes but this fails."""
    by_type: dict[str, Any] = {}
    counts: dict[str, Any] = {}
    for t in TYPES:
        ids = [c.id for c in suite.cases if c.type == t]
        passed = sum(outcomes[i] for i in ids)
        by_type[t] = passed / len(ids) if ids else None
        counts[t] = {"cases": len(ids), "passed": passed}
    regressions = [] if baseline is None else [
        {"id": c.id, "type": c.type, "description": c.description}
        for c in suite.cases if baseline.get(c.id) and not outcomes[c.id]]
    total = len(suite.cases)
    return {"suite": suite.name, "path": suite.path, "cases": total,
            "pass_rate": sum(outcomes.values()) / total if total else None, "by_type": by_type, "counts": counts,
            "regressions": regressions, "failed": [cid for cid, ok in outcomes.items() if not ok]}
