"""A `transformers.TrainerCallback` that compresses and benches the trained model when `Trainer.train` ends."""
from __future__ import annotations

import hashlib
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from optikit.data import Dataset, DataSpec
from optikit.errors import ConfigError, MissingDependencyError
from optikit.integrations.modules import DataArg, from_module, model_label_names, resolve_data
from optikit.integrations.training import AfterTraining, run_after_training
from optikit.variant import safe_name

try:
    from transformers import TrainerCallback
except ImportError as exc:  # transformers is a core dependency; this guards a broken install
    raise MissingDependencyError("transformers", "hf") from exc

LABEL_FALLBACKS = ("label", "labels")  # what Trainer scripts call the label column once it holds class ids


def model_name(model: Any) -> str:
    """The model's own name: the last part of `config._name_or_path` (or `name_or_path`), else its class name."""
    path = getattr(getattr(model, "config", None), "_name_or_path", "") or getattr(model, "name_or_path", "") or ""
    last = str(path).replace("\\", "/").rstrip("/").split("/")[-1]
    return safe_name(last).strip("-") or type(model).__name__


def _columns(data: DataArg, options: Mapping[str, Any]) -> tuple[tuple[str, ...], str | None]:
    """The text and label columns the callback reads: given to the callback, else named by `data=`."""
    text_cols, label_col = options.get("text_cols"), options.get("label_col")
    spec = data.spec if isinstance(data, Dataset) else data if isinstance(data, DataSpec) else None
    if spec is not None:
        text_cols, label_col = text_cols or spec.text_cols, label_col or spec.label_col
    elif isinstance(data, Mapping):
        text_cols, label_col = text_cols or data.get("text_cols"), label_col or data.get("label_col")
    return tuple(text_cols or ()), label_col


def _frame(rows: Any, wanted: Sequence[str]) -> tuple[Any, list[str]] | None:
    """(a pandas frame of `wanted` columns, the columns it lacks), or None when `rows` is not a table."""
    import pandas as pd

    if isinstance(rows, pd.DataFrame):
        present = [c for c in wanted if c in rows.columns]
        return rows[present].reset_index(drop=True), [c for c in wanted if c not in rows.columns]
    names = getattr(rows, "column_names", None)
    if names is not None and hasattr(rows, "to_pandas"):
        present = [c for c in wanted if c in names]
        if hasattr(rows, "select_columns"):  # a datasets.Dataset: only these columns, not the token ids
            rows = rows.select_columns(present)
        frame = rows.to_pandas()
        return frame[present].reset_index(drop=True), [c for c in wanted if c not in names]
    if isinstance(rows, Sequence) and rows and all(isinstance(r, Mapping) for r in rows):
        frame = pd.DataFrame(list(rows))
        present = [c for c in wanted if c in frame.columns]
        return frame[present], [c for c in wanted if c not in frame.columns]
    return None


def _class_names(rows: Any, column: str) -> list[str] | None:
    """A datasets ClassLabel column's names: its ids mean those names, whatever the model calls them."""
    feature = (getattr(rows, "features", None) or {}).get(column)
    names = getattr(feature, "names", None)
    return [str(n) for n in names] if names else None


def eval_rows_file(rows: Any, text_cols: Sequence[str], label_col: str, label_names: Sequence[str] | None,
                   out: Path) -> tuple[Path | None, str | None]:
    """The Trainer's evaluation rows as a CSV under `out` (`eval-<sha12>.csv`, written atomically), or
    (None, why not) when they do not carry the raw text and label columns."""
    import pandas as pd

    from optikit._io import write_text_atomic

    if rows is None:
        return None, "the Trainer had no eval_dataset"
    if isinstance(rows, Mapping):
        if len(rows) != 1:
            return None, f"the Trainer has {len(rows)} eval datasets ({', '.join(map(str, rows))}); pass test_data="
        rows = next(iter(rows.values()))
    label = next((c for c in (label_col, *LABEL_FALLBACKS) if c in _available(rows)), label_col)
    found = _frame(rows, [*text_cols, label])
    if found is None:
        return None, f"the Trainer's eval_dataset ({type(rows).__name__}) is not a table optikit can read"
    frame, missing = found
    if len(frame) == 0:
        return None, "the Trainer's eval_dataset is empty"
    if missing:
        return None, (f"the Trainer's eval_dataset has no {', '.join(repr(c) for c in missing)} column(s) (only "
                      "token ids?)")
    values = frame[label]
    if pd.api.types.is_integer_dtype(values):  # class ids: name them, so they join the data's named labels
        names = _class_names(rows, label) or (list(label_names) if label_names else None)
        if names is not None and values.between(0, len(names) - 1).all():
            frame[label] = [names[int(i)] for i in values]
    frame = frame.rename(columns={label: label_col})[[*text_cols, label_col]]
    text = frame.to_csv(index=False)
    path = out / f"eval-{hashlib.sha256(text.encode()).hexdigest()[:12]}.csv"
    if not path.is_file():
        write_text_atomic(path, text)
    return path, None


def _available(rows: Any) -> list[str]:
    if isinstance(rows, Sequence) and rows and isinstance(rows[0], Mapping):
        return list(rows[0])
    columns = getattr(rows, "column_names", None)
    if columns is None:
        columns = getattr(rows, "columns", None)
    return [str(c) for c in columns] if columns is not None else []


def _active_mlflow_run() -> tuple[str, str] | None:
    """(run id, tracking uri) of the active MLflow run, if MLflow is in use at all (never imported for this)."""
    if "mlflow" not in sys.modules:
        return None
    import mlflow

    run = mlflow.active_run()
    return (run.info.run_id, mlflow.get_tracking_uri()) if run is not None else None


class OptikitCallback(TrainerCallback):
    """On `on_train_end`: saves the model as a teacher Variant (save_pretrained, safetensors), runs the chains,
    benches them, writes the report under `out` (default `<output_dir>/optikit`), and logs the headline figures.

    The test set is the Trainer's own `eval_dataset` when it still carries the raw `text_cols` and the label column
    (its rows are written to `<out>/eval-<sha12>.csv` and passed as `test_data=`); validation and calibration
    come from `data=`. Without one, optikit's seeded split of `data=` is the test set, and the report says that it
    may overlap the training rows. `test_data=` or `split_col=` given to the callback win over the eval_dataset.

    The teacher is named after the model (`config._name_or_path`), unless `name=` is given.

    The figures reach the trainer's reporters (MLflow, TensorBoard, W&B callbacks) when the callback is attached
    with `attach(trainer)`, which logs through `trainer.log`; otherwise they are appended to
    `state.log_history` (and so to trainer_state.json). When an MLflow run is active (the Trainer's MLflowCallback
    starts one), every figure, the lineage and the report files also go to an `optikit` run nested under it
    (`mlflow=False` turns that off). `self.outcome` holds everything afterwards; `self.mlflow_run_id` the nested run.

    Example:
        callback = OptikitCallback(passes={"int8": ["quantize"]}, data=csv, text_cols=["title"], label_col="tag")
        callback.attach(trainer); trainer.train()
        print(callback.outcome.results.best(max_loss=0.01).name)
    """

    def __init__(self, passes: Sequence[Any] | Mapping[str, Sequence[Any]], *, data: DataArg,
                 out: str | Path | None = None, threads: int | None = None,
                 bench_options: Mapping[str, Any] | None = None, prefix: str = "optikit", mlflow: bool = True,
                 **module_options: Any):
        if not passes:
            raise ConfigError("OptikitCallback needs at least one pass or chain")
        self.passes, self.data, self.out, self.threads = passes, data, out, threads
        self.bench_options = dict(bench_options or {})
        self.module_options = module_options
        self.prefix = prefix
        self.mlflow = mlflow
        self.outcome: AfterTraining | None = None
        self.mlflow_run_id: str | None = None
        self._trainer: Any = None
        self._mlflow_parent: tuple[str, str] | None = None

    def attach(self, trainer: Any) -> OptikitCallback:
        """Adds this callback to `trainer` and logs through it, so every reporter callback sees the figures.

        It runs before the reporting callbacks (MLflow, W&B, …): they close their runs on `on_train_end`, and the
        figures must reach those runs, not a new one."""
        self._trainer = trainer
        trainer.add_callback(self)
        callbacks = trainer.callback_handler.callbacks
        callbacks.remove(self)
        first = next((i for i, c in enumerate(callbacks)
                      if type(c).__module__.startswith("transformers.integrations")), len(callbacks))
        callbacks.insert(first, self)
        return self

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.mlflow and state.is_world_process_zero:
            self._mlflow_parent = _active_mlflow_run()  # a reporter may end it before on_train_end reaches us
        return control

    def _eval_dataset(self, kwargs: Mapping[str, Any]) -> Any:
        if self._trainer is not None:
            return getattr(self._trainer, "eval_dataset", None)
        loader = kwargs.get("eval_dataloader")  # its dataset may have lost the text columns (remove_unused_columns)
        return getattr(loader, "dataset", None)

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, processing_class: Any = None,
                     **kwargs: Any) -> Any:
        if not state.is_world_process_zero:
            return control  # one process measures: ranks > 0 would race on the same variant folders
        tokenizer = self.module_options.get("tokenizer", processing_class or kwargs.get("tokenizer"))
        options = {**self.module_options, "tokenizer": tokenizer}
        unwrapped = getattr(model, "module", model)  # DDP / DataParallel wrap the real model
        options.setdefault("name", model_name(unwrapped))
        out = Path(self.out) if self.out else Path(args.output_dir) / "optikit"
        notes: list[str] = []
        if options.get("test_data") is None and options.get("split_col") is None:
            text_cols, label_col = _columns(self.data, options)
            why: str | None = "text_cols and label_col are not known"
            if text_cols and label_col:
                names = model_label_names(unwrapped, options.get("label_names"))
                if names is None:  # the model numbers labels as optikit does without names: the data's sorted names
                    names = resolve_data(self.data, text_cols, label_col).label_names
                test, why = eval_rows_file(self._eval_dataset(kwargs), text_cols, label_col, names, out)
                if test is not None:
                    options["test_data"] = test
            if why is not None:
                notes.append(f"{why}: the test set is optikit's seeded split of data=, which may hold rows the model "
                             "was trained on; give the Trainer an eval_dataset with the raw text and label columns, "
                             "or pass test_data= to the callback")
        teacher = from_module(unwrapped, data=self.data, **options)
        self.outcome = run_after_training(teacher, self.passes, out=out, threads=self.threads,
                                          bench_options=self.bench_options, title="optikit after Trainer.train",
                                          notes=notes)
        self._track(out)
        metrics = self.outcome.metrics(self.prefix)
        if self._trainer is not None:
            self._log_through_trainer(metrics)  # → state.log_history and every reporter's on_log
        else:
            state.log_history.append({**metrics, "step": state.global_step})
        return control

    def _log_through_trainer(self, metrics: Mapping[str, float]) -> None:
        active = _active_mlflow_run()
        if self._mlflow_parent is None or active is not None or "mlflow" not in sys.modules:
            self._trainer.log(dict(metrics))
            return
        # The Trainer's run has ended already: MLflow's reporter would log into a new top-level run. Reopen it.
        import mlflow

        with mlflow.start_run(run_id=self._mlflow_parent[0]):
            self._trainer.log(dict(metrics))

    def _track(self, out: Path) -> None:
        """Every figure into an MLflow run nested under the Trainer's (or the script's) active run."""
        parent = (_active_mlflow_run() or self._mlflow_parent) if self.mlflow else None
        if parent is None or self.outcome is None:
            return
        from optikit.tracking.mlflow import TrackingConfig, track

        run_id, uri = parent
        outcome = self.outcome
        where = {outcome.results.variants[0].name: str(outcome.teacher.path),
                 **{name: str(v.path) for name, v in outcome.variants.items()}}
        self.mlflow_run_id = track({"run": outcome.results}, outcome.paths, out, config=TrackingConfig(uri),
                                   run_name=self.prefix, variant_paths={"run": where},
                                   tags={"optikit.source": "trainer"}, parent_run_id=run_id)
