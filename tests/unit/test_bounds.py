"""Sizes a user sets are bounded before any work: threads, batch sizes against the ceiling and the test split,
speedup rounds, and the architecture a manifest describes against the memory at hand."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from optikit import api
from optikit._bounds import MAX_BATCH_SIZE, check_batch_sizes, check_threads, fit_batch_sizes
from optikit.errors import ConfigError, ModelLoadError
from optikit.harness.timing import MIN_SPEEDUP_ROUNDS, SpeedupConfig


@pytest.mark.parametrize("threads", [-3, 0, True, 1.5, "2"])
def test_check_threads_refuses_anything_but_a_whole_number_from_one(threads: Any) -> None:
    with pytest.raises(ConfigError, match=r"^threads must be a whole number ≥ 1 \(or None for the default\), got "):
        check_threads(threads)


def test_check_threads_keeps_none_for_the_default_and_a_positive_count() -> None:
    assert (check_threads(None), check_threads(3)) == (None, 3)


@pytest.mark.parametrize(("sizes", "pattern"), [
    ([100_000], rf"^batch size 100000 is above optikit's ceiling of {MAX_BATCH_SIZE} .*: pass {MAX_BATCH_SIZE} or less$"),
    ([1, 0], r"^batch size must be a whole number ≥ 1, got 0$"),
    ("32", r"^batch sizes must be a list of whole numbers"),
])
def test_check_batch_sizes_refuses_sizes_out_of_bounds(sizes: Any, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        check_batch_sizes(sizes)


def test_fit_batch_sizes_refuses_a_chosen_batch_larger_than_the_test_split() -> None:
    with pytest.raises(ConfigError, match=r"^batch size 64 is larger than the test split \(20 examples\): pass a "
                                          r"batch size of 20 or less, or a larger test set \(--test-data\)$"):
        fit_batch_sizes((1, 64), 20, chosen=True)


def test_fit_batch_sizes_caps_a_default_batch_to_a_small_test_split_with_a_note() -> None:
    assert fit_batch_sizes((1, 32), 20, chosen=False) == (
        (1, 20), "default batch size 32 capped to the test split's 20 examples")
    assert fit_batch_sizes((1, 32), 360, chosen=False) == ((1, 32), None)


def test_speedup_rounds_minimum_is_one_constant() -> None:
    with pytest.raises(ConfigError, match=f"speedup rounds must be ≥ {MIN_SPEEDUP_ROUNDS}, got 3"):
        SpeedupConfig(rounds=3)
    assert SpeedupConfig(rounds=MIN_SPEEDUP_ROUNDS).rounds == 4


# api.bench: every setting is refused before a model is resolved (resolving may train or import), and the
# test-split bound before anything is measured.

def _never(what: str) -> Any:
    def called(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"{what} ran: the bad setting was not refused before the work")
    return called


@pytest.fixture
def twenty_test_examples(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """api.bench with a baseline whose test split holds 20 examples; records the config the harness would get."""
    seen: dict[str, Any] = {}
    baseline = SimpleNamespace(splits=SimpleNamespace(test=tuple(range(20))))
    monkeypatch.setattr(api, "resolve_bench_models", lambda *a, **k: [baseline])

    def harness(resolved: Any, config: Any, **kwargs: Any) -> str:
        seen["config"] = config
        return "results"

    monkeypatch.setattr(api, "_bench", harness)
    return seen


@pytest.mark.parametrize(("settings", "pattern"), [
    ({"threads": -3}, r"threads must be a whole number ≥ 1"),
    ({"threads": 0}, r"threads must be a whole number ≥ 1"),
    ({"batch_sizes": [100_000]}, r"batch size 100000 is above optikit's ceiling"),
    ({"speedup_rounds": 3}, r"speedup rounds must be ≥ 4, got 3"),
])
def test_api_bench_refuses_a_bad_setting_before_resolving_any_model(settings: dict[str, Any], pattern: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api, "resolve_bench_models", _never("model resolution"))
    with pytest.raises(ConfigError, match=pattern):
        api.bench(["digits-cnn"], **settings)


def test_api_bench_refuses_a_chosen_batch_larger_than_the_test_split_before_measuring(
        twenty_test_examples: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api, "_bench", _never("the harness"))
    with pytest.raises(ConfigError, match=r"batch size 64 is larger than the test split \(20 examples\)"):
        api.bench(["baseline"], batch_sizes=(1, 64))


def test_api_bench_caps_the_default_batch_to_a_small_test_split(twenty_test_examples: dict[str, Any]) -> None:
    api.bench(["baseline"])
    assert twenty_test_examples["config"].latency.batch_sizes == (1, 20)


def test_api_bench_keeps_chosen_batches_within_the_test_split(twenty_test_examples: dict[str, Any]) -> None:
    api.bench(["baseline"], batch_sizes=[1, 20], threads=2)
    config = twenty_test_examples["config"]
    assert (config.latency.batch_sizes, config.threads) == ((1, 20), 2)


@pytest.mark.parametrize("threads", [-3, 0])
def test_api_compress_refuses_bad_threads_before_reading_the_model(threads: int,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api, "_variant", _never("model resolution"))
    with pytest.raises(ConfigError, match=rf"threads must be a whole number ≥ 1 \(or None for the default\), got "
                                          rf"{threads}$"):
        api.compress_chain("digits-cnn", ["quantize"], threads=threads)


def test_api_demo_refuses_bad_threads_before_training(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(api, "teach", _never("teaching"))
    with pytest.raises(ConfigError, match="threads must be a whole number ≥ 1"):
        api.demo(tmp_path / "demo", threads=-3)


def test_api_load_matrix_refuses_bad_overrides_before_reading_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "not-read.toml"  # a refusal about the file would mean the overrides were checked later
    with pytest.raises(ConfigError, match="threads must be a whole number ≥ 1"):
        api.load_matrix(missing, threads=-3)
    with pytest.raises(ConfigError, match="batch size 100000 is above optikit's ceiling"):
        api.load_matrix(missing, batch_sizes=[100_000])


def test_api_search_refuses_a_batch_size_above_the_ceiling_before_any_work(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import optikit.search.study

    monkeypatch.setattr(optikit.search.study, "search", _never("the search"))
    with pytest.raises(ConfigError, match="batch size 100000 is above optikit's ceiling"):
        api.search("digits-cnn", tmp_path / "s", batch_size=100_000)
    assert not (tmp_path / "s").exists()


# Architectures from a manifest: a width that cannot fit in memory is refused before anything is allocated.

def test_a_manifest_whose_architecture_exceeds_memory_is_refused_before_allocating(digits_teacher: Any,
                                                                                   tmp_path: Path) -> None:
    from optikit.models import load_module
    from optikit.variant import load_variant

    crafted = tmp_path / "crafted"
    shutil.copytree(digits_teacher.path, crafted)
    manifest = crafted / "variant.json"
    spec = json.loads(manifest.read_text())
    spec["architecture"]["hidden"] = 10**9  # ~270 billion weights, about a terabyte as float32
    manifest.write_text(json.dumps(spec))
    with pytest.raises(ModelLoadError, match=r"^architecture digits-cnn needs [\d.]+ [GT]B for its [\d,]+ weights, "
                                             r"more than the .* of memory available: check its sizes"):
        load_module(load_variant(crafted))


def test_an_architecture_that_fits_in_memory_still_builds() -> None:
    from optikit.models import build_architecture, count_parameters

    module = build_architecture({"name": "digits-cnn", "channels": [8, 16, 16], "hidden": 32})
    assert count_parameters(module)[0] > 0 and next(module.parameters()).device.type == "cpu"
