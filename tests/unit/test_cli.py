"""`optikit bench` takes each option in the form where it applies and refuses it, in one line, where it does not.

The API below the CLI is replaced by recorders: these tests prove what reaches optikit.api, not a measurement.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import click
import pytest

from optikit import api
from optikit.cli import bench, main

MATRIX = """
name = "m"
[[teachers]]
recipe = "minilm-tags"
data = "old.csv"
[latency]
min_iterations = 20
[variants]
onnx = ["export-onnx"]
int8 = ["export-onnx", "quantize:mode=dynamic"]
sparse = ["prune-unstructured:amount=0.5"]
[[gate]]
kind = "max-f1-drop"
variants = ["onnx", "sparse"]
[[gate]]
kind = "min-speedup"
variant = "int8"
"""


class Seen(SimpleNamespace):
    """What the CLI handed to the API: the matrix and keywords of bench_matrix, or the calls of the variants path."""


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Seen:
    seen = Seen(matrix=None, matrix_kwargs=None, resolve=None, bench=None, report_dir=None, track=None)
    summary = tmp_path / "summary.md"
    summary.write_text("summary\n")
    failed_rule = SimpleNamespace(passed=False, rule="r", detail="d")

    def bench_matrix(matrix: Any, out: Any, **kwargs: Any) -> Any:
        seen.matrix, seen.matrix_kwargs = matrix, {"out": out, **kwargs}
        return SimpleNamespace(paths={"md": summary}, run=SimpleNamespace(out=out), failed_cells=["g/x"],
                               gate=[failed_rule], gate_passed=False)

    def resolve(models: Any, data: Any, test_data: Any, keys: Any) -> list[Any]:
        seen.resolve = {"data": data, "test_data": test_data, **keys}
        return [SimpleNamespace(id="a", path=Path("a"))]

    def run_bench(resolved: Any, **kwargs: Any) -> Any:
        seen.bench = kwargs
        return "results"

    def write_report(results: Any, out: Any, **kwargs: Any) -> dict[str, Path]:
        seen.report_dir = out
        return {k: Path(f"x.{k}") for k in ("json", "csv", "long_csv", "md", "html")}

    def track(results: Any, paths: Any, out: Any, **kwargs: Any) -> str:
        seen.track = kwargs
        return "run-1"

    monkeypatch.setattr(api, "bench_matrix", bench_matrix)
    monkeypatch.setattr(api, "resolve_bench_models", resolve)
    monkeypatch.setattr(api, "bench", run_bench)
    monkeypatch.setattr(api, "write_report", write_report)
    monkeypatch.setattr(api, "print_table", lambda results: None)
    monkeypatch.setattr(api, "track_bench", track)
    return seen


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


Check = Callable[[Seen, int], bool]
REFUSED = None
# Every option of `bench`: the arguments that give it, then what proves it applied with a matrix and with
# variants, or REFUSED where that form must refuse it. A new option without a row fails the completeness test.
OPTIONS: dict[str, tuple[list[str], Check | None, Check | None]] = {
    "out": (["--out", "o"], lambda s, c: s.matrix_kwargs["out"] == Path("o"), lambda s, c: s.report_dir == Path("o")),
    "threads": (["--threads", "3"], lambda s, c: s.matrix.threads == 3, lambda s, c: s.bench["threads"] == 3),
    "batch_sizes": (["--batch-size", "4", "--batch-size", "9"], lambda s, c: s.matrix.batch_sizes == (4, 9),
                    lambda s, c: tuple(s.bench["batch_sizes"]) == (4, 9)),
    "min_seconds": (["--min-seconds", "0.7"], lambda s, c: s.matrix.latency.min_seconds == 0.7,
                    lambda s, c: s.bench["min_seconds"] == 0.7),
    "device": (["--device", "cuda:1"], lambda s, c: s.matrix.devices == ("cuda:1",),
               lambda s, c: s.bench["device"] == "cuda:1"),
    "fail_fast": (["--fail-fast"], lambda s, c: s.matrix_kwargs["fail_fast"] and c == 1,
                  lambda s, c: s.bench["fail_fast"] is True),
    "gate": (["--gate"], lambda s, c: c == 1, REFUSED),
    "allow_noisy": (["--allow-noisy"], lambda s, c: s.matrix_kwargs["allow_noisy"] is True, REFUSED),
    "resume": (["--resume", "--out", "o"], lambda s, c: s.matrix_kwargs["resume"] is True, REFUSED),
    "variant_names": (["--variant", "int8"], lambda s, c: [v.name for v in s.matrix.variants] == ["baseline", "int8"],
                      REFUSED),
    "pass_names": (["--pass", "prune-unstructured"],
                   lambda s, c: [v.name for v in s.matrix.variants] == ["baseline", "sparse"], REFUSED),
    "data": (["--data", "new.csv"], lambda s, c: s.matrix.teachers[0].data == str(Path("new.csv").resolve()),
             lambda s, c: s.resolve["data"] == Path("new.csv")),
    "test_data": (["--test-data", "t.csv"], REFUSED,
                  lambda s, c: s.resolve["test_data"] == Path("t.csv") == s.bench["test_data"]),
    "split_col": (["--split-col", "s"], REFUSED, lambda s, c: s.resolve["split_col"] == "s"),
    "text_cols": (["--text-cols", "a,b"], REFUSED, lambda s, c: s.resolve["text_cols"] == ("a", "b")),
    "label_col": (["--label-col", "tag"], REFUSED, lambda s, c: s.resolve["label_col"] == "tag"),
    "image_col": (["--image-col", "img"], REFUSED, lambda s, c: s.resolve["image_col"] == "img"),
    "labels": (["--labels", "x,y"], REFUSED, lambda s, c: s.resolve["labels"] == ("x", "y")),
    "suite": (["--suite", "none"], REFUSED, lambda s, c: s.bench["suite"] == "none"),
    "slices": (["--slice", "tag=mlops"], REFUSED, lambda s, c: s.bench["slices"] == ["tag=mlops"]),
    "resamples": (["--resamples", "200"], REFUSED, lambda s, c: s.bench["resamples"] == 200),
    "seed": (["--seed", "7"], REFUSED, lambda s, c: s.bench["seed"] == 7),
    "speedup_rounds": (["--speedup-rounds", "6"], REFUSED, lambda s, c: s.bench["speedup_rounds"] == 6),
    "pad_to": (["--pad-to", "64"], REFUSED, lambda s, c: s.bench["pad_to"] == 64),
    "min_iterations": (["--min-iterations", "7"], lambda s, c: s.matrix.latency.min_iterations == 7,
                       lambda s, c: s.bench["min_iterations"] == 7),
    "processes": (["--processes", "3"], lambda s, c: s.matrix.latency.processes == 3,
                  lambda s, c: s.bench["processes"] == 3),
    "no_isolate": (["--no-isolate"], REFUSED, lambda s, c: s.bench["isolate"] is False),
    "track": (["--track", "mlflow"], lambda s, c: s.matrix_kwargs["track"] == "mlflow",
              lambda s, c: s.track is not None),
    "tracking_uri": (["--track", "mlflow", "--tracking-uri", "sqlite:///t.db"],
                     lambda s, c: s.matrix_kwargs["tracking_uri"] == "sqlite:///t.db",
                     lambda s, c: s.track["tracking_uri"] == "sqlite:///t.db"),
    "experiment": (["--track", "mlflow", "--experiment", "e"], lambda s, c: s.matrix_kwargs["experiment"] == "e",
                   lambda s, c: s.track["experiment"] == "e"),
    "executor": (["--executor", "ray"], lambda s, c: s.matrix_kwargs["executor"] == "ray", REFUSED),
    "address": (["--executor", "ray", "--address", "auto"], lambda s, c: s.matrix_kwargs["address"] == "auto", REFUSED),
}


def test_every_bench_option_has_a_row() -> None:
    assert set(OPTIONS) == {p.name for p in bench.params if isinstance(p, click.Option)}


def assert_refused(code: int, err: str, flag: str) -> None:
    lines = [line for line in err.strip().splitlines() if line]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("optikit: error: ") and flag in lines[0], lines[0]


@pytest.mark.parametrize("name", list(OPTIONS))
def test_bench_option_applies_or_is_refused_with_a_matrix(name: str, seen: Seen, tmp_path: Path, capsys,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.toml").write_text(MATRIX)
    args, applies, _ = OPTIONS[name]
    code, err = run(["bench", "m.toml", *args], capsys)
    if applies is REFUSED:
        assert_refused(code, err, args[0])
        assert seen.matrix is None  # refused before any work
    else:
        assert seen.matrix is not None and applies(seen, code), (code, err)


@pytest.mark.parametrize("name", list(OPTIONS))
def test_bench_option_applies_or_is_refused_with_variants(name: str, seen: Seen, capsys) -> None:
    args, _, applies = OPTIONS[name]
    code, err = run(["bench", "model-a", "model-b", *args], capsys)
    if applies is REFUSED:
        assert_refused(code, err, args[0])
        assert seen.resolve is None
    else:
        assert code == 0 and applies(seen, code), (code, err)


def test_a_matrix_setting_left_out_keeps_the_file_s_own(seen: Seen, tmp_path: Path, capsys,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.toml").write_text(MATRIX)
    run(["bench", "m.toml"], capsys)
    m = seen.matrix
    assert m.latency.min_iterations == 20 and m.devices == ("cpu",) and m.batch_sizes == (1, 32)
    assert m.teachers[0].data == str((tmp_path / "old.csv").resolve()) and len(m.variants) == 4


@pytest.mark.parametrize(("args", "pattern"), [
    (["--tracking-uri", "x"], r"--tracking-uri needs --track mlflow"),
    (["--experiment", "x"], r"--experiment needs --track mlflow"),
    (["--address", "auto"], r"--address needs --executor ray"),
    (["--resume"], r"--resume needs the --out folder"),
    (["--variant", "nope"], r"m.toml has no variant 'nope': its variants are onnx, int8, sparse$"),
    (["--pass", "distill"], r"no variant of m.toml uses pass 'distill': its chains use export-onnx, "
                            r"prune-unstructured, quantize$"),
])
def test_bench_matrix_refuses_options_that_cannot_apply(args: list[str], pattern: str, seen: Seen, tmp_path: Path,
                                                        capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.toml").write_text(MATRIX)
    code, err = run(["bench", "m.toml", *args], capsys)
    assert_refused(code, err, "")
    assert re.search(pattern, err.strip()), err
    assert seen.matrix is None


def test_narrowing_keeps_the_gate_rules_of_the_variants_kept(seen: Seen, tmp_path: Path, capsys,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.toml").write_text(MATRIX)
    code, err = run(["bench", "m.toml", "--pass", "quantize", "--variant", "onnx"], capsys)
    assert [v.name for v in seen.matrix.variants] == ["baseline", "onnx", "int8"]
    assert [r.name for r in seen.matrix.gate] == ["max-f1-drop(1 points)", "min-speedup(int8 ≥ 1×)"]
    assert seen.matrix.gate[0].variants == ("onnx",)
    assert "narrowed to baseline, onnx, int8" in err


@pytest.mark.parametrize("flag", ["--gate", "--resume", "--executor", "--address", "--variant", "--pass"])
def test_bench_variants_refuse_each_matrix_option(flag: str, seen: Seen, capsys) -> None:
    value = {"--executor": ["ray"], "--address": ["auto"], "--variant": ["onnx"], "--pass": ["quantize"]}.get(flag, [])
    code, err = run(["bench", "model-a", flag, *value], capsys)
    assert_refused(code, err, f"{flag} needs a matrix file: optikit bench MATRIX.toml {flag}")


# Output locations and bounds are checked before any work (issue 12): each refusal is one line, exit 2, and nothing
# below the CLI ran.

def _never(what: str) -> Callable[..., Any]:
    def called(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"{what} ran before the bad input was refused")
    return called


THROUGH_A_FILE = "--out a-file/sub: a-file is a file, not a folder; pass a folder path"


def test_bench_out_through_a_file_is_refused_before_any_measurement(seen: Seen, tmp_path: Path, capsys,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("")
    (tmp_path / "m.toml").write_text(MATRIX)
    code, err = run(["bench", "model-a", "model-b", "--out", "a-file/sub"], capsys)
    assert_refused(code, err, THROUGH_A_FILE)
    assert seen.resolve is None and seen.bench is None and seen.report_dir is None
    code, err = run(["bench", "m.toml", "--out", "a-file/sub"], capsys)
    assert_refused(code, err, THROUGH_A_FILE)
    assert seen.matrix is None


@pytest.mark.parametrize(("args", "work"), [
    (["compress", "digits-cnn", "--pass", "export-onnx"], "compress_chain"),
    (["search", "digits-cnn"], "search"),
    (["report", "results.json"], "render_report"),
    (["demo"], "demo"),
])
def test_every_writing_command_refuses_an_out_through_a_file_before_its_work(
        args: list[str], work: str, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("")
    monkeypatch.setattr(api, work, _never(f"api.{work}"))
    code, err = run([*args, "--out", "a-file/sub"], capsys)
    assert_refused(code, err, THROUGH_A_FILE)


@pytest.mark.parametrize("args", [
    ["teach", "digits-cnn"],
    ["bench", "digits-cnn", "--out", "r"],
    ["compress", "digits-cnn", "--pass", "export-onnx", "--out", "r"],
    ["import", "model.onnx", "--data", "data.csv"],
    ["demo", "--out", "r"],
])
def test_an_unwritable_optikit_home_is_one_line_before_training_or_importing(
        args: list[str], tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("")
    (tmp_path / "model.onnx").write_bytes(b"")  # read as an ONNX model only after the check
    home = tmp_path / "a-file" / "home"  # root ignores a read-only mode, so the folder is made unwritable this way
    monkeypatch.setenv("OPTIKIT_HOME", str(home))
    monkeypatch.delenv("OPTIKIT_QUIET", raising=False)  # so that a "training teacher" line would show
    monkeypatch.setattr(importlib.import_module("optikit.teach"), "fit", _never("training"))
    code, err = run(args, capsys)
    assert_refused(code, err, f"OPTIKIT_HOME={home} is not writable: {tmp_path / 'a-file'} is a file, not a folder; "
                              "set OPTIKIT_HOME to a writable folder")
    assert "training teacher" not in err and not (tmp_path / "r").exists()


def test_bench_refuses_a_batch_size_above_the_ceiling_before_resolving_models(seen: Seen, capsys) -> None:
    code, err = run(["bench", "model-a", "model-b", "--batch-size", "100000"], capsys)
    assert_refused(code, err, "--batch-size 100000 is above optikit's ceiling of 4096")
    assert seen.resolve is None


def test_speedup_rounds_range_and_help_match_the_config_minimum(seen: Seen, capsys) -> None:
    code, err = run(["bench", "model-a", "--speedup-rounds", "3"], capsys)
    assert code == 2 and "3 is not in the range x>=4" in err and seen.resolve is None
    code, _ = run(["bench", "model-a", "--speedup-rounds", "4"], capsys)
    assert code == 0 and seen.bench["speedup_rounds"] == 4
    help_text = " ".join(click.Context(bench).get_help().split())
    assert "(at least 4)" in help_text and "x>=4" in help_text


def test_bench_writes_results_json_before_a_report_file_fails_and_says_where(tmp_path: Path, capsys,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import optikit.report.outputs

    measured = SimpleNamespace(to_dict=lambda: {"variants": ["measured"]})
    monkeypatch.setattr(api, "resolve_bench_models", lambda *a, **k: [SimpleNamespace(id="a", path=Path("a"))])
    monkeypatch.setattr(api, "bench", lambda resolved, **kwargs: measured)

    def disk_full(*args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(optikit.report.outputs, "write_outputs", disk_full)
    out = tmp_path / "run"
    code, err = run(["bench", "model-a", "model-b", "--out", str(out)], capsys)
    saved = out / "results.json"
    assert_refused(code, err, f"cannot write the report in {out} (No space left on device); the results are saved in "
                              f"{saved}: `optikit report {saved}` writes the other files once that is fixed")
    assert json.loads(saved.read_text()) == {"variants": ["measured"]}


def test_a_manifest_whose_split_indices_leave_the_data_is_one_line(digits_teacher, tmp_path: Path, capsys) -> None:
    # optikit issue 12: an edited (or foreign) manifest used to end in an IndexError traceback.
    import shutil

    copy = tmp_path / "teacher"
    shutil.copytree(digits_teacher.path, copy)
    manifest = json.loads((copy / "variant.json").read_text())
    manifest["splits"]["test"] = [*manifest["splits"]["test"][:5], 99_999]
    (copy / "variant.json").write_text(json.dumps(manifest))
    code, err = run(["bench", str(copy), "--out", str(tmp_path / "r"), "--min-seconds", "0"], capsys)
    lines = [line for line in err.splitlines() if line.startswith("optikit: error: ")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err
    assert "split indices reach row 99999 but the data has 1797 rows" in lines[0]
