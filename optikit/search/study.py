"""Multi-objective search over pass chains (Optuna): each trial is a matrix cell, cached by content like any other.

Objectives: relative latency (1 / the speedup of `optikit.harness.compare`: the cell's interleaved rounds, which
are robust to the load of a shared machine) or relative size, against the loss of macro-F1 (or accuracy). The
Pareto set and the best variant within the loss budget (`compare.best`, as in the report's verdict and
`Results.best`) are reported, with the usual report files.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from optikit.config import require
from optikit.errors import MissingDependencyError
from optikit.harness import compare
from optikit.harness.results import Results, VariantResult
from optikit.matrix.executors import ExecutorConfig
from optikit.matrix.spec import BASELINE, LatencySpec, Matrix, TeacherSpec, VariantSpec, _step
from optikit.search.space import SearchSpace, students_for
from optikit.variant import variant_id


@dataclass(frozen=True)
class SearchConfig:
    model: str = "digits-cnn"  # a teacher name / recipe, or a variant directory
    max_loss: float = 0.01  # a fraction of `metric` (0.01 = one point), as in quantize's max_loss
    metric: Literal["f1_macro", "accuracy"] = "f1_macro"
    objective: Literal["latency", "size"] = "latency"
    trials: int = 20
    batch_size: int = 32  # the batch size whose latency is the objective
    batch_sizes: tuple[int, ...] = (1, 32)
    threads: int = 1
    seed: int = 0
    data: str | None = None  # a text teacher's data file, or the data of the user's own model
    data_keys: tuple[tuple[str, Any], ...] = ()  # the user's model: test_data, split_col, text_cols, label_col, …
    latency: LatencySpec = field(default_factory=lambda: LatencySpec(min_iterations=10, min_seconds=0.1,
                                                                     warmup_max=20))
    parallel: int = 1  # trials asked at once (ray: run concurrently)

    def __post_init__(self) -> None:
        require(0 <= self.max_loss < 1, f"max_loss must be in [0, 1), got {self.max_loss}")
        require(self.metric in ("f1_macro", "accuracy"), f"metric must be f1_macro or accuracy, got {self.metric!r}")
        require(self.objective in ("latency", "size"), f"objective must be latency or size, got {self.objective!r}")
        require(self.trials >= 1, f"trials must be ≥ 1, got {self.trials}")
        require(self.batch_size in self.batch_sizes, f"batch_size {self.batch_size} is not in {self.batch_sizes}")
        require(self.parallel >= 1, f"parallel must be ≥ 1, got {self.parallel}")


@dataclass(frozen=True)
class TrialOutcome:
    number: int
    chain: tuple[str, ...]
    params: dict[str, Any]
    variant: str  # the cell's name: c-<hash of the chain>, so identical chains share one cached cell
    status: str
    loss: float | None = None
    cost: float | None = None  # relative latency or size (variant / baseline; < 1 is better)
    error: str | None = None


@dataclass(frozen=True)
class SearchOutcome:
    trials: tuple[TrialOutcome, ...]
    pareto: tuple[TrialOutcome, ...]
    best: TrialOutcome | None  # lowest cost within the loss budget (the teacher itself when nothing beats it)
    results: Results
    paths: dict[str, Path]
    searched_on: str = ""  # the machine whose choices were searched (SearchSpace.searched_on)

    def best_result(self) -> VariantResult | None:
        return next((v for v in self.results.variants if self.best and v.name == self.best.variant), None)


def _optuna() -> Any:
    try:
        import optuna
    except ImportError as exc:
        raise MissingDependencyError("optuna", "search") from exc
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _cell_name(chain: list[str]) -> str:
    return f"c-{variant_id(chain)[:10]}" if chain else BASELINE


def _figures(record: dict[str, Any], config: SearchConfig) -> tuple[float, float]:
    """(loss, cost) of a cell against the baseline measured in the same cell process; cost = 1 / the gain."""
    row, base = VariantResult.from_dict(record["row"]), VariantResult.from_dict(record["baseline"])
    d = compare.delta(row, base, config.metric)
    if d is None:
        raise ValueError(f"cell {record.get('variant')} has no {config.metric}")
    gain = compare.size_ratio(row, base) if config.objective == "size" else \
        getattr(compare.speedup(row, base, config.batch_size), "ratio", None)
    if not gain:
        raise ValueError(f"cell {record.get('variant')} has no {config.objective} at batch {config.batch_size}")
    return -d.value, 1.0 / gain


def _best(candidates: list[TrialOutcome], results: Results, config: SearchConfig) -> TrialOutcome | None:
    """The trial whose cell `compare.best` picks: the teacher itself when nothing gains within the budget."""
    choice = compare.best(results, config.objective, batch_size=config.batch_size,
                          budget_points=config.max_loss * 100, metric=config.metric)
    if choice is None:
        return None
    return next((t for t in candidates if t.variant == choice.variant.name and t.status == "ok"), None)


def _matrix(config: SearchConfig, teacher: TeacherSpec, chains: dict[str, list[str]]) -> Matrix:
    variants = [VariantSpec(BASELINE, ())]
    variants += [VariantSpec(n, tuple(_step(s, n) for s in c)) for n, c in chains.items() if n != BASELINE]
    return Matrix(name="search", teachers=(teacher,), variants=tuple(variants), batch_sizes=config.batch_sizes,
                  threads=config.threads, latency=config.latency, f1_budget_points=config.max_loss * 100,
                  cell_timeout_s=900)


def _pareto(done: list[TrialOutcome]) -> list[TrialOutcome]:
    # One point per cell: a chain suggested twice is one variant (its record was reused), listed once.
    unique = {t.variant: t for t in reversed(done)}
    ok = [t for t in unique.values() if t.status == "ok" and t.loss is not None and t.cost is not None]
    return sorted((t for t in ok if not any((o.loss <= t.loss and o.cost <= t.cost) and  # type: ignore[operator]
                                            (o.loss < t.loss or o.cost < t.cost) for o in ok)),  # type: ignore[operator]
                  key=lambda t: t.cost)  # type: ignore[arg-type,return-value]


def search(config: SearchConfig, out: Path, *, executor: ExecutorConfig | None = None,
           echo: Callable[[str], None] = lambda s: None) -> SearchOutcome:
    """Runs `config.trials` trials into `out` (cells under out/cells, reused by a rerun) and writes the report."""
    from optikit.matrix.collect import group_results
    from optikit.matrix.runner import run_matrix
    from optikit.report.outputs import write_outputs
    from optikit.teach import resolve_model

    optuna = _optuna()
    from optikit.api import data_options

    # Trains, imports or reuses the baseline once, here; the trials then start from its variant directory.
    teacher_variant = resolve_model(config.model, options=data_options(config.data, **dict(config.data_keys)))
    teacher = TeacherSpec(recipe=str(teacher_variant.path), label=teacher_variant.name)
    space = SearchSpace(students=students_for(teacher_variant), max_loss=config.max_loss,
                        teacher_format=teacher_variant.format,
                        teacher_has_hf_config=(teacher_variant.path / "config.json").is_file())
    echo(space.searched_on())
    sampler = optuna.samplers.TPESampler(seed=config.seed, n_startup_trials=max(4, config.trials // 3),
                                         multivariate=True)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler, study_name="optikit-search")
    parallel = config.parallel if executor is not None and executor.name == "ray" else 1
    done: list[TrialOutcome] = []
    records: dict[str, dict[str, Any]] = {}
    chains: dict[str, list[str]] = {}
    while len(done) < config.trials:
        asked = [study.ask() for _ in range(min(parallel, config.trials - len(done)))]
        batch = {t.number: space.suggest(t) for t in asked}
        names = {n: _cell_name(c) for n, c in batch.items()}
        chains.update({names[n]: c for n, c in batch.items()})
        run = run_matrix(_matrix(config, teacher, {names[n]: c for n, c in batch.items()}), out, resume=True,
                         executor=executor)
        for cell_record in next(iter(run.records.values())):
            records[cell_record["variant"]] = cell_record
        for trial in asked:
            name, chain = names[trial.number], batch[trial.number]
            rec = records.get(name) if chain else records.get(BASELINE)
            if rec is not None and rec.get("status") == "ok":
                loss, cost = (0.0, 1.0) if not chain else _figures(rec, config)
                study.tell(trial, [cost, max(loss, 0.0)])
                outcome = TrialOutcome(trial.number, tuple(chain), dict(trial.params), name, "ok", loss, cost)
            else:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                outcome = TrialOutcome(trial.number, tuple(chain), dict(trial.params), name, "failed",
                                       error=(rec or {}).get("error", "no record"))
            done.append(outcome)
            shown = f"loss {(outcome.loss or 0.0) * 100:+.2f} pts, {config.objective} ×{outcome.cost or 0.0:.3f}" \
                if outcome.status == "ok" else f"FAILED: {outcome.error}"
            echo(f"trial {trial.number + 1}/{config.trials}: {' → '.join(chain) or 'teacher'}: {shown}")
    # The teacher itself is always a candidate: a search that finds nothing faster within budget says so.
    teacher_point = TrialOutcome(-1, (), {}, BASELINE, "ok", 0.0, 1.0) if BASELINE in records else None
    candidates = done + ([teacher_point] if teacher_point and not any(not t.chain for t in done) else [])
    pareto = _pareto(candidates)
    matrix = _matrix(config, teacher, chains)
    ordered = [records[BASELINE]] if BASELINE in records else []
    ordered += [records[v.name] for v in matrix.variants if v.name != BASELINE and v.name in records]
    results = group_results(matrix, f"{teacher.label}@cpu", ordered)
    best = _best(candidates, results, config)
    results.settings["search"] = {"config": asdict(config), "trials": [asdict(t) for t in done],
                                  "pareto": [t.variant for t in pareto], "best": best.variant if best else None,
                                  "machine": space.machine()}
    paths = write_outputs(results, out, title=f"optikit search {config.model}", budget_points=config.max_loss * 100)
    paths["search"] = out / "search.json"
    from optikit._io import write_json_atomic

    write_json_atomic(paths["search"], {"best": asdict(best) if best else None, "machine": space.machine(),
                                        "pareto": [asdict(t) for t in pareto], "trials": [asdict(t) for t in done]})
    return SearchOutcome(tuple(done), tuple(pareto), best, results, paths, space.searched_on())


def summary(outcome: SearchOutcome, config: SearchConfig) -> str:
    """A few lines for the terminal: the Pareto set and the pick."""
    lines = [outcome.searched_on] if outcome.searched_on else []
    lines.append(f"{len(outcome.trials)} trials, {sum(t.status != 'ok' for t in outcome.trials)} failed; "
                 f"Pareto set ({config.objective} ×baseline vs loss):")
    for t in outcome.pareto:
        lines.append(f"  {t.variant}: ×{t.cost or 0.0:.3f}, loss {(t.loss or 0.0) * 100:+.2f} pts  "
                     f"{' → '.join(t.chain) or 'teacher'}")
    b = outcome.best
    lines.append(f"best within {config.max_loss * 100:g} points: " + (
        f"{b.variant} (×{b.cost or 0.0:.3f} {config.objective}, loss {(b.loss or 0.0) * 100:+.2f} pts): "
        f"{' → '.join(b.chain) or 'teacher'}"
        if b else "none"))
    return "\n".join(lines) + "\n" + json.dumps({k: str(v) for k, v in outcome.paths.items()})
