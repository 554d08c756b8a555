"""From training scripts into the pipeline: in-memory models as teachers, a Trainer callback, a plain-loop hook."""
from __future__ import annotations

from typing import Any

from optikit.integrations.modules import from_module, resolve_data
from optikit.integrations.training import AfterTraining, after_training

__all__ = ["AfterTraining", "OptikitCallback", "after_training", "from_module", "resolve_data"]


def __getattr__(name: str) -> Any:
    # transformers is imported only when the callback is asked for: a plain-PyTorch user never pays for it.
    if name == "OptikitCallback":
        from optikit.integrations.hf import OptikitCallback

        return OptikitCallback
    raise AttributeError(name)
