"""Matrix files: what a valid file becomes, and the one-line error each mistake produces."""
from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from optikit.errors import ConfigError
from optikit.matrix.runner import plan_cells, validate
from optikit.matrix.spec import BASELINE, MaxF1Drop, MinSpeedup, NoFailures, load_matrix, narrow, parse_matrix

GOOD = """
name = "t"
teachers = ["digits-cnn"]
batch_sizes = [1, 8]
[latency]
min_seconds = 0.1
[variants]
onnx = ["export-onnx"]
int8 = ["export-onnx", {pass = "quantize", mode = "static"}]
[[gate]]
kind = "max-f1-drop"
points = 2
[[gate]]
kind = "min-speedup"
variant = "int8"
ratio = 1.5
[[gate]]
kind = "no-failures"
"""


def test_matrix_parses_variants_rules_and_adds_the_baseline(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text(GOOD)
    m = load_matrix(path)
    assert [v.name for v in m.variants] == [BASELINE, "onnx", "int8"]
    assert [s.spec() for s in m.variants[2].chain] == ["export-onnx", "quantize:mode=static"]
    assert m.batch_sizes == (1, 8) and m.latency.min_seconds == 0.1
    assert isinstance(m.gate[0], MaxF1Drop) and m.gate[0].points == 2.0
    assert isinstance(m.gate[1], MinSpeedup) and m.gate[1].name == "min-speedup(int8 ≥ 1.5×)"
    assert isinstance(m.gate[2], NoFailures)
    validate(m)  # every pass and option exists; the chain order can run


def test_matrix_cells_cover_teachers_times_variants_times_devices(tmp_path: Path) -> None:
    m = parse_matrix({**_raw(), "devices": ["cpu", "cuda:0"]})
    cells = plan_cells(m, tmp_path)
    assert len(cells) == 3 * 2
    assert len({c.key for c in cells}) == 6
    assert cells[0].record == tmp_path / "cells" / "digits-cnn@cpu" / "baseline.json"


def test_cell_key_changes_with_the_chain_but_not_with_the_gate(tmp_path: Path) -> None:
    a = plan_cells(parse_matrix(_raw()), tmp_path)
    b = plan_cells(parse_matrix({**_raw(), "gate": [{"kind": "no-failures"}]}), tmp_path)
    c = plan_cells(parse_matrix({**_raw(), "variants": {"onnx": ["export-onnx:opset=18"], "int8": ["quantize"]}}),
                   tmp_path)
    assert [x.key for x in a] == [x.key for x in b]
    assert a[1].key != c[1].key and a[0].key == c[0].key


def _raw() -> dict:
    return {"teachers": ["digits-cnn"], "variants": {"onnx": ["export-onnx"], "int8": ["quantize"]}}


def test_latency_processes_reach_the_cell_bench_config() -> None:
    from optikit.matrix.cell import _bench_config

    m = parse_matrix({**_raw(), "latency": {"processes": 3}})
    assert m.latency.processes == 3
    assert _bench_config({"latency": dict(m.latency.__dict__), "batch_sizes": [1], "threads": 1,
                          "device": "cpu"}).processes == 3


@pytest.mark.parametrize("change, message", [
    ({"colour": "red"}, "unknown key 'colour'"),
    ({"teachers": []}, "matrix has no teachers"),
    ({"batch_sizes": [0]}, "batch_sizes must be a whole number ≥ 1, got 0"),
    ({"devices": ["tpu"]}, "device must be cpu or cuda"),
    ({"latency": {"min_seconds": 1, "warmup": 3}}, "unknown option 'warmup' for [latency]"),
    ({"latency": {"processes": 0}}, "latency processes must be ≥ 1"),
    ({"variants": {"baseline": ["export-onnx"]}}, "`baseline` is the teacher itself"),
    ({"variants": {"x": []}}, "variant 'x' has an empty chain"),
    ({"variants": {"bad name": ["export-onnx"]}}, "variant name 'bad name'"),
    ({"variants": {"x": [42]}}, "a step is"),
    ({"gate": {"kind": "no-failures"}}, "gate rules are a list of tables"),
    ({"gate": [{"kind": "fastest"}]}, "gate rule 1 has kind 'fastest'"),
    ({"gate": [{"kind": "max-f1-drop", "pts": 1}]}, "unknown option 'pts' for gate rule 1 (max-f1-drop)"),
    ({"gate": [{"kind": "min-speedup", "variant": "nope"}]}, "names unknown variant 'nope'"),
    ({"gate": [{"kind": "min-speedup", "variant": "onnx", "batch_size": 64}]}, "batch size 64"),
    ({"teachers": [{"recipe": "digits-cnn", "colour": 1}]}, "unknown option 'colour' for teacher 1"),
    ({"threads": "many"}, "must be an integer"),
])
def test_matrix_rejects_mistakes_with_one_line(change: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_matrix({**_raw(), **change})
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("variants, message", [
    ({"x": ["no-such-pass"]}, "variant 'x': unknown pass 'no-such-pass': known passes are"),
    ({"x": ["quantize:colour=blue"]}, "variant 'x': unknown option 'colour'"),
    ({"x": ["export-onnx", "prune-structured"]}, "variant 'x': pass prune-structured cannot take a onnx model"),
])
def test_matrix_validation_fails_before_any_cell_runs(variants: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        validate(parse_matrix({**_raw(), "variants": variants}))


def test_matrix_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_matrix(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("teachers = [")
    with pytest.raises(ConfigError, match="bad.toml is not valid TOML"):
        load_matrix(bad)


def test_shipped_matrices_load_and_validate() -> None:
    root = Path(__file__).resolve().parents[3] / "benchmarks"
    ci = load_matrix(root / "ci.toml")
    validate(ci)
    used = {s.pass_name for v in ci.variants for s in v.chain}
    assert used >= {"export-onnx", "quantize", "prune-unstructured", "prune-structured", "distill"}
    modes = {dict(s.options).get("mode") for v in ci.variants for s in v.chain if s.pass_name == "quantize"}
    assert modes == {"dynamic", "static", None}  # None: `quantize` with no options (mode=auto)
    validate(load_matrix(root / "minilm-tags.toml"))


NARROW = """
name = "n"
teachers = ["digits-cnn"]
[variants]
onnx = ["export-onnx"]
int8 = ["export-onnx", "quantize:mode=dynamic"]
sparse = ["prune-unstructured:amount=0.5"]
[[gate]]
kind = "no-failures"
[[gate]]
kind = "max-f1-drop"
[[gate]]
kind = "max-f1-drop"
name = "pair"
variants = ["onnx", "sparse"]
[[gate]]
kind = "min-size-ratio"
variant = "int8"
"""


def test_narrow_keeps_the_named_variants_and_those_using_a_pass() -> None:
    m = parse_matrix(tomllib.loads(NARROW), "n.toml")
    assert narrow(m) is m
    assert [v.name for v in narrow(m, variants=["sparse"]).variants] == [BASELINE, "sparse"]
    assert [v.name for v in narrow(m, passes=["export-onnx"]).variants] == [BASELINE, "onnx", "int8"]
    assert [v.name for v in narrow(m, ["sparse"], ["quantize"]).variants] == [BASELINE, "int8", "sparse"]
    assert [v.name for v in narrow(m, variants=[BASELINE]).variants] == [BASELINE]


def test_narrow_drops_gate_rules_about_dropped_variants_only() -> None:
    m = parse_matrix(tomllib.loads(NARROW), "n.toml")
    rules = {r.name: r for r in narrow(m, variants=["onnx"]).gate}
    assert set(rules) == {"no-failures", "max-f1-drop(1 points)", "pair"}  # min-size-ratio(int8) went with int8
    assert rules["pair"].variants == ("onnx",) and rules["max-f1-drop(1 points)"].variants == ()
    assert {r.name for r in narrow(m, passes=["quantize"]).gate} == {"no-failures", "max-f1-drop(1 points)",
                                                                        "min-size-ratio(int8 ≥ 1×)"}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"variants": ["nope"]}, "n.toml has no variant 'nope': its variants are onnx, int8, sparse"),
    ({"passes": ["distill"]}, "no variant of n.toml uses pass 'distill': its chains use export-onnx, "
                              "prune-unstructured, quantize"),
])
def test_narrow_names_the_known_variants_or_passes(kwargs: dict, message: str) -> None:
    m = parse_matrix(tomllib.loads(NARROW), "n.toml")
    with pytest.raises(ConfigError) as info:
        narrow(m, **kwargs)
    assert str(info.value) == message


@pytest.mark.parametrize("change, message", [
    ({"teachers": [{"recipe": "digits-cnn", "label": "../../../x"}]}, "teacher label '../../../x' starts with '.'"),
    ({"teachers": [{"recipe": "digits-cnn", "label": "a/../../x"}]}, "teacher label 'a/../../x' holds '/'"),
    ({"teachers": [{"recipe": "digits-cnn", "label": "..\\x"}]}, "teacher label '..\\\\x' starts with '.'"),
    ({"teachers": [{"recipe": "digits-cnn", "label": "a\x00b"}]}, "teacher label 'a\\x00b' holds '\\x00'"),
    ({"variants": {"../x": ["export-onnx"]}}, "variant name '../x' must be letters"),
    ({"variants": {"x/../../y": ["export-onnx"]}}, "variant name 'x/../../y' must be letters"),
    ({"devices": ["cuda/../../x"]}, "device must be cpu or cuda (cuda:N for GPU N), got 'cuda/../../x'"),
    ({"devices": ["../x"]}, "device must be cpu or cuda"),
])
def test_a_name_that_would_leave_out_is_refused_naming_the_field(change: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_matrix({**_raw(), **change})
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("recipe, label", [("..", "teacher"), ("/models/.hidden", "hidden"), ("./my model", "my model")])
def test_a_label_taken_from_the_recipe_path_is_made_a_safe_folder_name(recipe: str, label: str, tmp_path: Path,
                                                                       monkeypatch) -> None:
    (tmp_path / "models" / "here").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "models" / "here")  # ".." is then a small folder: its files make the cell's key
    m = parse_matrix({"teachers": [recipe]})
    assert m.teachers[0].label == label
    assert plan_cells(m, tmp_path)[0].record.parent == tmp_path / "cells" / f"{label}@cpu"


def test_cell_paths_outside_out_are_refused_even_if_a_name_slipped_past_the_specs(tmp_path: Path) -> None:
    m = parse_matrix(_raw())
    object.__setattr__(m.teachers[0], "label", "../../escaped")  # what a future unchecked name could do
    with pytest.raises(ConfigError, match="would be written outside --out"):
        plan_cells(m, tmp_path / "out")


def test_a_matrix_batch_size_past_the_ceiling_is_one_line(tmp_path) -> None:
    from optikit.errors import ConfigError
    from optikit.matrix.spec import load_matrix

    path = tmp_path / "m.toml"
    path.write_text('name = "m"\nbatch_sizes = [1, 100000]\n[[teachers]]\nrecipe = "digits-cnn"\n'
                    '[variants]\nx = ["export-onnx"]\n')
    with pytest.raises(ConfigError, match="batch_sizes 100000 is above optikit's ceiling of 4096"):
        load_matrix(path)
