"""A `transformers.TrainerCallback` that compresses and benches the trained model when `Trainer.train` ends."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from optikit.errors import ConfigError, MissingDependencyError
from optikit.integrations.modules import DataArg, from_module
from optikit.integrations.training import AfterTraining, run_after_training

try:
    from transformers import TrainerCallback
except ImportError as exc:  # transformers is a core dependency; this guards a broken install
    raise MissingDependencyError("transformers", "hf") from exc


class OptikitCallback(TrainerCallback):
    """On `on_train_end`: saves the model as a teacher Variant (save_pretrained, safetensors), runs the chains,
    benches them, writes the report under `out` (default `<output_dir>/optikit`), and logs the headline figures.

    The figures reach the trainer's reporters (MLflow, TensorBoard, W&B callbacks) when the callback is attached
    with `attach(trainer)`, which logs through `trainer.log`; otherwise they are appended to
    `state.log_history` (and so to trainer_state.json). `self.outcome` holds everything afterwards.

    Example:
        callback = OptikitCallback(passes={"int8": ["quantize"]}, data=csv, text_cols=["title"], label_col="tag")
        callback.attach(trainer); trainer.train()
        print(callback.outcome.results.best(max_loss=0.01).name)
    """

    def __init__(self, passes: Sequence[Any] | Mapping[str, Sequence[Any]], *, data: DataArg,
                 out: str | Path | None = None, threads: int | None = None,
                 bench_options: Mapping[str, Any] | None = None, prefix: str = "optikit", **module_options: Any):
        if not passes:
            raise ConfigError("OptikitCallback needs at least one pass or chain")
        self.passes, self.data, self.out, self.threads = passes, data, out, threads
        self.bench_options = dict(bench_options or {})
        self.module_options = module_options
        self.prefix = prefix
        self.outcome: AfterTraining | None = None
        self._trainer: Any = None

    def attach(self, trainer: Any) -> OptikitCallback:
        """Adds this callback to `trainer` and logs through it, so every reporter callback sees the figures."""
        self._trainer = trainer
        trainer.add_callback(self)
        return self

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, processing_class: Any = None,
                     **kwargs: Any) -> Any:
        if not state.is_world_process_zero:
            return control  # one process measures: ranks > 0 would race on the same variant folders
        tokenizer = self.module_options.get("tokenizer", processing_class or kwargs.get("tokenizer"))
        options = {**self.module_options, "tokenizer": tokenizer}
        options.setdefault("name", Path(args.output_dir).name or "trainer")
        unwrapped = getattr(model, "module", model)  # DDP / DataParallel wrap the real model
        teacher = from_module(unwrapped, data=self.data, **options)
        out = Path(self.out) if self.out else Path(args.output_dir) / "optikit"
        self.outcome = run_after_training(teacher, self.passes, out=out, threads=self.threads,
                                          bench_options=self.bench_options, title="optikit after Trainer.train")
        metrics = self.outcome.metrics(self.prefix)
        if self._trainer is not None:
            self._trainer.log(metrics)  # → state.log_history and every reporter's on_log
        else:
            state.log_history.append({**metrics, "step": state.global_step})
        return control
