"""`optikit bench MATRIX.toml` end to end: outputs, --resume, crashing cells, --fail-fast and the gate."""
from __future__ import annotations

import json
import os
import textwrap
import time
from pathlib import Path

from tests.integration.conftest import matrix_file, run_cli


def test_bench_matrix_writes_every_output(two_cell_run: Path) -> None:
    out = two_cell_run
    for name in ("results.json", "results.csv", "summary.md", "report.html"):
        assert (out / name).is_file(), name
    results = json.loads((out / "results.json").read_text())
    assert [v["name"] for v in results["variants"]] == ["baseline", "onnx"]
    assert all(v["status"] == "ok" for v in results["variants"])
    assert results["settings"]["gate"][0] == {"rule": "max-f1-drop(1 points)", "passed": True, "detail": "holds"}
    gate = results["settings"]["gate"]
    # The matrix's two rules, then the gate's own: its outcome depends on this machine's load while the test ran.
    assert [g["rule"] for g in gate][-1] == "measured-in-fair-conditions" and all(g["passed"] for g in gate[:-1])
    md = (out / "summary.md").read_text()
    assert "| onnx |" in md and f"({sum(g['passed'] for g in gate)}/3 rules hold)" in md
    assert md.count("\n") < 30


def test_resume_reruns_only_the_cell_whose_record_is_missing(two_cell_run: Path, tmp_path: Path) -> None:
    out = two_cell_run
    cells = out / "cells"
    [group] = [p for p in cells.iterdir() if p.is_dir()]
    baseline, onnx = group / "baseline.json", group / "onnx.json"
    before = baseline.stat().st_mtime_ns
    onnx_finished = json.loads(onnx.read_text())["finished"]
    onnx.unlink()
    time.sleep(0.01)
    m = Path(json.loads((out / "results.json").read_text())["settings"]["matrix"]["source"])
    assert run_cli("bench", str(m), "--out", str(out), "--resume", "--gate", "--allow-noisy") == 0
    assert baseline.stat().st_mtime_ns == before  # not rerun, not rewritten
    assert json.loads(onnx.read_text())["finished"] > onnx_finished  # rerun
    assert json.loads((out / "results.json").read_text())["variants"][1]["status"] == "ok"


def test_gate_failure_exits_1_naming_the_rule(two_cell_run: Path, digits_teacher, tmp_path: Path, capsys) -> None:
    # Same cells (the gate is not part of a cell's key), so --resume reuses them all and only the gate changes.
    m = matrix_file(Path(json.loads((two_cell_run / "results.json").read_text())["settings"]["matrix"]["source"])
                    .with_name("strict.toml"), digits_teacher.path, 'onnx = ["export-onnx"]', gate='''
        [[gate]]
        kind = "min-size-ratio"
        variant = "onnx"
        ratio = 100
    ''')
    import shutil

    out = tmp_path / "strict"
    shutil.copytree(two_cell_run / "cells", out / "cells")
    code = run_cli("bench", str(m), "--out", str(out), "--resume", "--gate", "--allow-noisy")
    err = capsys.readouterr().err
    assert code == 1
    assert "gate rule min-size-ratio(onnx ≥ 100×) failed: onnx's artifact is" in err
    assert "done earlier (resumed)" in err and "…" not in err.split("resumed")[-1]
    assert run_cli("bench", str(m), "--out", str(out), "--resume") == 0  # without --gate: reported, not enforced


def test_user_errors_exit_2(tmp_path: Path, digits_teacher, capsys) -> None:
    m = matrix_file(tmp_path / "bad.toml", digits_teacher.path, 'x = ["quantize:colour=blue"]')
    assert run_cli("bench", str(m), "--out", str(tmp_path / "o")) == 2
    assert "variant 'x': unknown option 'colour'" in capsys.readouterr().err
    assert not (tmp_path / "o" / "cells").exists()  # nothing ran


def test_crashing_and_raising_cells_are_recorded_and_the_matrix_goes_on(digits_teacher, crash_plugin: str,
                                                                          tmp_path: Path, capsys) -> None:
    m = matrix_file(tmp_path / "broken.toml", digits_teacher.path,
                    'crash = ["test-segfault"]\nraises = ["test-raises"]',
                    gate='[[gate]]\nkind = "no-failures"', plugins=f'plugins = ["{crash_plugin}"]')
    out = tmp_path / "out"
    # --fail-fast: stops at the crash; nothing after it runs.
    assert run_cli("bench", str(m), "--out", str(out), "--fail-fast") == 1
    group = out / "cells" / f"{digits_teacher.path.name}@cpu"
    assert json.loads((group / "crash.json").read_text())["error"].startswith("cell process killed by SIGSEGV")
    assert not (group / "raises.json").exists()
    capsys.readouterr()
    # Without it every cell runs; the baseline is reused; failures are recorded with their error.
    assert run_cli("bench", str(m), "--out", str(out), "--resume", "--gate") == 1
    err = capsys.readouterr().err
    assert "gate rule no-failures failed: crash failed (cell process killed by SIGSEGV" in err
    results = json.loads((out / "results.json").read_text())
    by_name = {v["name"]: v for v in results["variants"]}
    assert by_name["baseline"]["status"] == "ok" and len(by_name) == 3
    assert by_name["raises"]["status"] == "failed"
    assert "deliberate failure in a pass" in by_name["raises"]["error"]
    assert "Fatal Python error: Segmentation fault" in (group / "crash.log").read_text()
    page = (out / "report.html").read_text()
    assert "deliberate failure in a pass" in page and "cell process killed by SIGSEGV" in page


def test_report_rerenders_and_compares_two_runs(two_cell_run: Path, tmp_path: Path, capsys) -> None:
    old = json.loads((two_cell_run / "results.json").read_text())
    # An "old" run where onnx was slower and more accurate: the new run should read as faster and worse.
    for v in old["variants"]:
        if v["name"] == "onnx":
            v["alignment"]["f1_macro"] += 0.05
            for lat in v["latency"]:
                lat["steady_p50_ms"] *= 3
    old_path = tmp_path / "old.json"
    old_path.write_text(json.dumps(old))
    out = tmp_path / "rerender"
    assert run_cli("report", str(two_cell_run / "results.json"), "--against", str(old_path), "--out", str(out)) == 0
    md = (out / "summary.md").read_text()
    assert f"**Against {old_path}**" in md and "- worse: onnx f1_macro (points)" in md
    assert "- better: onnx ms b1" in md
    assert "Changes against" in (out / "report.html").read_text()
    assert run_cli("report", str(tmp_path / "nope.json")) == 2


def test_bench_variant_paths_still_work(digits_teacher, tmp_path: Path) -> None:
    os.environ.setdefault("OPTIKIT_QUIET", "1")
    out = tmp_path / "paths"
    assert run_cli("bench", str(digits_teacher.path), "--out", str(out), "--batch-size", "1",
                   "--min-seconds", "0.05", "--threads", "1") == 0
    assert (out / "summary.md").is_file() and (out / "report.html").is_file()


def test_a_narrowed_matrix_runs_only_the_variants_kept(two_cell_run: Path, digits_teacher, tmp_path: Path,
                                                       capsys) -> None:
    # A cell's key does not depend on the other variants, so --resume reuses the baseline and onnx cells of the
    # shared run; the int8 variant left out never runs, and the gate rule about it goes with it.
    import shutil

    m = matrix_file(tmp_path / "wide.toml", digits_teacher.path,
                    'onnx = ["export-onnx"]\nint8 = ["export-onnx", "quantize"]',
                    gate='[[gate]]\nkind = "min-size-ratio"\nvariant = "int8"\nratio = 100')
    out = tmp_path / "narrow"
    shutil.copytree(two_cell_run / "cells", out / "cells")
    assert run_cli("bench", str(m), "--out", str(out), "--resume", "--gate", "--allow-noisy", "--variant", "onnx") == 0
    assert "narrowed to baseline, onnx (gate rules: none)" in capsys.readouterr().err
    assert [v["name"] for v in json.loads((out / "results.json").read_text())["variants"]] == ["baseline", "onnx"]
    assert not list((out / "cells").rglob("int8.*"))


def test_a_matrix_of_two_teachers_writes_one_combined_csv_of_each_kind(digits_teacher, tmp_path: Path) -> None:
    import pandas as pd

    # One teacher under two labels: two teacher×device groups, one baseline cell each.
    m = tmp_path / "two-teachers.toml"
    m.write_text(textwrap.dedent(f'''
        name = "two-teachers"
        batch_sizes = [1]
        threads = 1
        [[teachers]]
        model = "{digits_teacher.path}"
        label = "first"
        [[teachers]]
        model = "{digits_teacher.path}"
        label = "second"
        [latency]
        min_iterations = 5
        min_seconds = 0.05
        warmup_max = 10
        [variants]
    '''))
    out = tmp_path / "out"
    assert run_cli("bench", str(m), "--out", str(out)) == 0
    for group in ("first-at-cpu", "second-at-cpu"):
        frame = pd.read_csv(out / group / "results.csv")
        assert (frame.loc[0, "teacher"], frame.loc[0, "device"]) == (group.split("-at-")[0], "cpu")
        assert (out / group / "results-long.csv").is_file()
    wide = pd.read_csv(out / "results.csv")
    assert list(zip(wide["teacher"], wide["device"], wide["variant"], strict=True)) == [
        ("first", "cpu", "baseline"), ("second", "cpu", "baseline")]
    long = pd.read_csv(out / "results-long.csv")
    assert set(long["teacher"]) == {"first", "second"}
    assert len(long[(long["figure"] == "latency_ms") & (long["batch_size"] == 1)]) == 2
