"""Quiet third-party chatter in the processes optikit runs: the command line and each matrix cell."""
from __future__ import annotations

import os


def quiet_libraries() -> None:
    """Library chatter (exporter registration, deprecations) drowns the results a user ran us for."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(torch|onnxruntime|transformers)\..*")
    # The TorchScript exporter's tracer (export-onnx:exporter=torchscript) warns about every constant it records.
    warnings.filterwarnings("ignore", message=r"torch\.tensor results are registered as constants")
    warnings.filterwarnings("ignore", message=r"Converting a tensor to a Python")
    # torchao (which transformers imports when neural-compressor brought it) warns about its CUDA-only kernels
    # and pytree registrations on every CPU run; neural-compressor announces the accelerator it detected.
    for name in ("torch.onnx", "torch._dynamo", "torch.export", "onnxscript", "transformers", "root", "torchao",
                 "torch.utils._pytree", "neural_compressor", "nncf"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models come from local paths or packages, never the hub
