"""Load time of quantize:backend=neural-compressor: rebuilds INC's PT2E int8 graph from the fp32 weights and the
recorded activation scales, compiled by inductor (its x86 int8 kernels need freezing)."""
from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from optikit.errors import ModelLoadError
from optikit.models import PIXEL_INPUT, torch_forward

if TYPE_CHECKING:
    import torch.nn as nn

RECIPE_KIND = "inc-pt2e-static"
# The INC static-config fields that decide the graph (which ops carry q/dq nodes, dtypes, schemes).
CONFIG_FIELDS = ("w_dtype", "w_sym", "w_granularity", "w_algo", "act_dtype", "act_sym", "act_granularity", "act_algo")


@contextlib.contextmanager
def quiet_inc() -> Iterator[None]:
    """INC logs every step at INFO and warns that the qdq graph wants compiling (which it gets)."""
    import neural_compressor.common.utils.logger  # noqa: F401  (it sets the level once, on import)

    inc = logging.getLogger("neural_compressor")
    level = inc.level
    inc.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        inc.setLevel(level)


def positional(module: nn.Module, names: Sequence[str]) -> nn.Module:
    """The classifier as a function of positional tensors returning logits, which torch.export takes."""
    import torch.nn as nn

    class Positional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = module

        def forward(self, *tensors: Any) -> Any:
            return torch_forward(self.inner, dict(zip(names, tensors, strict=True)))

    return Positional().eval()


def export(module: nn.Module, example: tuple[Any, ...]) -> Any:
    """torch.export through INC (it marks the graph for PT2E), every input's batch (and sequence) dim dynamic."""
    import torch

    dims = [{d: torch.export.Dim.AUTO for d in range(min(t.dim(), 2))} for t in example]
    with quiet_inc():
        from neural_compressor.torch.export import export as inc_export

        return inc_export(module, example, dynamic_shapes=(tuple(dims),))


def static_config(fields: dict[str, Any]) -> Any:
    from neural_compressor.torch.quantization import get_default_static_config

    config = get_default_static_config()
    for name in CONFIG_FIELDS:
        if name in fields:
            setattr(config, name, fields[name])
    return config


def config_fields(config: Any) -> dict[str, Any]:
    return {name: getattr(config, name) for name in CONFIG_FIELDS}


def qdq_nodes(graph_module: Any) -> list[Any]:
    """The per-tensor quantize/dequantize nodes of activations, in graph order (weights are per channel)."""
    import torch

    ops = (torch.ops.quantized_decomposed.quantize_per_tensor.default,
           torch.ops.quantized_decomposed.dequantize_per_tensor.default)
    return [n for n in graph_module.graph.nodes if n.op == "call_function" and n.target in ops]


def activation_qparams(graph_module: Any) -> list[list[float]]:
    """(scale, zero point) of every activation q/dq node: what calibration decided, as JSON numbers."""
    return [[float(n.args[1]), int(n.args[2])] for n in qdq_nodes(graph_module)]


def example_inputs(recipe: dict[str, Any]) -> tuple[Any, ...]:
    import torch

    return tuple(torch.ones(spec["shape"], dtype=getattr(torch, spec["dtype"])) for spec in recipe["inputs"])


def rebuild(module: nn.Module, recipe: dict[str, Any]) -> nn.Module:
    """The int8 module of `recipe` for the fp32 `module`: export, prepare, convert, then the recorded activation
    scales replace what one forward on a constant input observed. Weight scales are a function of the weights,
    so they come out the same; the graph is the one the pass validated, and loading needs no data."""
    import torch

    names = [spec["name"] for spec in recipe["inputs"]]
    example = example_inputs(recipe)
    with quiet_inc(), torch.no_grad():
        from neural_compressor.torch.quantization import convert, prepare

        prepared = prepare(export(positional(module, names), example), static_config(recipe["config"]),
                           example_inputs=example)
        prepared(*example)  # weight observers see the weights; activation scales are set below
        converted = convert(prepared)
    nodes, recorded = qdq_nodes(converted), recipe["activation_qparams"]
    if len(nodes) != len(recorded):
        raise ModelLoadError(f"the int8 recipe records {len(recorded)} activation scales but this torch / "
                             f"neural-compressor builds {len(nodes)}: re-run quantize:backend=neural-compressor "
                             "on the fp32 parent with the versions installed here")
    for node, (scale, zero_point) in zip(nodes, recorded, strict=True):
        node.args = (node.args[0], float(scale), int(zero_point), *node.args[3:])
    converted.recompile()
    return compiled(converted, names, image=PIXEL_INPUT in names)


def compiled(graph_module: Any, names: Sequence[str], *, image: bool) -> nn.Module:
    """The converted graph under torch.compile, called like the classifier it replaces (`torch_forward`)."""
    import torch
    import torch._inductor.config as inductor_config
    import torch.nn as nn

    # Images compile per batch size: with a symbolic batch, inductor's int8 convolution of a 1-channel input fails
    # its stride check (torch 2.13). Text compiles dynamic on its second shape, since sequence lengths vary.
    program = torch.compile(graph_module, dynamic=False if image else None)

    # Not a submodule: exported graphs refuse .train()/.eval(), and the int8 kernels are CPU kernels anyway.
    class CompiledInt8(nn.Module):
        def forward(self, *args: Any, **kwargs: Any) -> Any:
            tensors = args or tuple(kwargs[name] for name in names)
            # Freezing is what turns the q/dq pairs into oneDNN int8 kernels; dynamo reads it when it compiles,
            # which happens on the first call of each new shape, so it is set around every call.
            with torch.no_grad(), inductor_config.patch(freezing=True):
                logits = program(*tensors)
            return _Output(logits) if kwargs else logits

    return CompiledInt8().eval()


class _Output:
    """What a Hugging Face classifier returns, as far as `torch_forward` reads it."""

    def __init__(self, logits: Any) -> None:
        self.logits = logits


def input_specs(example: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    return [{"name": name, "shape": list(array.shape), "dtype": str(array.dtype)} for name, array in example.items()]
