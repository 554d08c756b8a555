"""Serving: one variant loaded once for online inference, its inputs checked before they reach the model."""
from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from optikit.errors import DataError, ModelLoadError
from optikit.harness.metrics import softmax
from optikit.models import Encoder
from optikit.runners import Runner, load_runner
from optikit.serve.log import Prediction
from optikit.variant import Variant

DIGITS_SHAPE = (1, 8, 8)  # scikit-learn's bundled digits: one channel, 8×8


class InputError(DataError):
    """An input the served model cannot take; the app answers 422 with this one line."""


def expected_image_shape(variant: Variant, runner: Runner | None = None) -> tuple[int, ...] | None:
    """C×H×W of one image example, from the variant's data (or a static ONNX input); None when only C is known."""
    spec = variant.data
    if spec.source == "digits":
        return DIGITS_SHAPE
    if spec.image_size is not None:
        return (spec.channels, *spec.image_size)
    session = getattr(runner, "session", None)
    if session is not None:
        shape = session.get_inputs()[0].shape[1:]
        if len(shape) == 3 and all(isinstance(d, int) for d in shape):
            return tuple(shape)
    return None


class ServedModel:
    """A variant loaded once (runner + encoder); `predict` turns a batch of raw examples into softmax probabilities.

    Calls are serialized per model: a fast tokenizer refuses concurrent use ("Already borrowed"), and two batches
    at once on the same cores only make each slower.
    """

    def __init__(self, variant: Variant, threads: int | None) -> None:
        self.variant = variant
        self.name = variant.name
        self.kind = variant.task.kind
        self.label_names = variant.task.label_names
        self.runner = load_runner(variant, threads)
        self.encoder = Encoder(variant)
        self.image_shape = expected_image_shape(variant, self.runner) if self.kind == "image" else None
        self._lock = threading.Lock()

    def check(self, inputs: list[Any]) -> Any:
        """The batch as the encoder takes it (a list of texts, or one float32 array N×C×H×W); InputError otherwise."""
        if not inputs:
            raise InputError("no inputs: send {\"inputs\": [...]} with at least one example, or {\"input\": ...}")
        if self.kind == "text":
            for i, example in enumerate(inputs):
                if not isinstance(example, str):
                    raise InputError(f"input {i} is {type(example).__name__}, but {self.name} takes text: "
                                     "send each example as a string")
            return list(inputs)
        want = self.image_shape
        shape_text = "×".join(map(str, want)) if want else "C×H×W"
        arrays = []
        for i, example in enumerate(inputs):
            try:
                array = np.asarray(example, dtype=np.float32)
            except (TypeError, ValueError):
                raise InputError(f"input {i} is not a numeric array: send each image as nested lists of numbers, "
                                 f"shape {shape_text}") from None
            if array.ndim != 3 or (want is not None and array.shape != want):
                got = "×".join(map(str, array.shape)) or "a scalar"
                raise InputError(f"input {i} has shape {got}, but {self.name} takes images of shape {shape_text}: "
                                 "send nested lists, channels first")
            if not np.all(np.isfinite(array)):
                raise InputError(f"input {i} holds NaN or infinity: send finite pixel values")
            arrays.append(array)
        if want is None and len({a.shape for a in arrays}) > 1:
            raise InputError("the images of one request have different shapes: send one shape per request")
        return np.stack(arrays)

    def predict(self, inputs: list[Any]) -> tuple[list[Prediction], float]:
        """One Prediction per example (label, softmax probabilities, per-example ms) and that per-example ms."""
        batch = self.check(inputs)
        with self._lock:
            start = time.perf_counter()
            logits = self.runner.logits(self.encoder.encode(batch))
            ms = (time.perf_counter() - start) * 1000.0 / len(inputs)
        probs = softmax(np.asarray(logits, dtype=np.float64))
        if probs.shape != (len(inputs), len(self.label_names)):
            raise ModelLoadError(f"{self.name} returned {probs.shape[-1]} scores for {len(self.label_names)} labels: "
                             "the model does not match its manifest; recreate the variant")
        return [Prediction(label=int(p.argmax()), probs=tuple(float(x) for x in p), ms=ms) for p in probs], ms
