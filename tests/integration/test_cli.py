"""The command line end to end: results for real, and every bad input as one line with exit code 2."""
import json
from pathlib import Path

import pytest

from optikit.cli import main


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as info:
        main([*args])
    out, err = capsys.readouterr()
    return info.value.code, out, err


def run_ok(args, capsys):
    try:
        main([*args])
    except SystemExit as exc:  # click exits 0 on success in some paths
        assert exc.code in (0, None), capsys.readouterr()
    return capsys.readouterr()


def assert_one_line_error(code, err, pattern):
    import re

    assert code == 2
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert re.search(pattern, lines[0]), lines[0]


def test_compress_runs_a_chain_and_prints_each_variant(digits_teacher, tmp_path, capsys):
    out = run_ok(["compress", str(digits_teacher.path), "--pass", "quantize", "--out", str(tmp_path)], capsys).out
    assert "export-onnx (added: the next pass needs ONNX)" in out
    assert out.count(str(tmp_path)) == 2


def test_bench_writes_results_for_each_variant(digits_teacher, tmp_path, capsys):
    from optikit.api import compress_chain

    onnx_fp32, int8 = compress_chain(digits_teacher, ["export-onnx", "quantize"], out=tmp_path / "v")
    report = tmp_path / "report"
    out = run_ok(["bench", str(digits_teacher.path), str(onnx_fp32.path), str(int8.path), "--out", str(report),
                  "--min-seconds", "0.05", "--batch-size", "1", "--batch-size", "8"], capsys).out
    results = json.loads((report / "results.json").read_text())
    assert len(results["variants"]) == 3 and "results.json" in out
    for row in results["variants"]:
        assert row["status"] == "ok"
        assert {lat["batch_size"] for lat in row["latency"]} == {1, 8}
        assert {"p50_ms", "p90_ms", "p99_ms", "throughput_per_s"} <= set(row["latency"][0])
        assert {"accuracy", "f1_macro", "f1_weighted", "precision_macro", "recall_weighted"} <= set(row["alignment"])
        assert {"log_loss", "brier", "ece"} <= set(row["capability"])
        assert 0.0 <= row["fidelity"]["agreement"] <= 1.0
        assert row["size"]["bytes_on_disk"] > 0 and row["size"]["parameters"] > 0
    assert (report / "results.csv").read_text().count("\n") == 4
    assert (report / "report.html").is_file()


def test_passes_lists_options(capsys):
    out = run_ok(["passes"], capsys).out
    assert "quantize:" in out and "mode (auto|dynamic|static)" in out and "export-onnx:" in out


def test_teachers_lists_the_builtin_recipes(capsys):
    out = run_ok(["teachers"], capsys).out
    assert out.startswith("digits-cnn:") and "minilm-tags:" in out


def test_missing_model_path(tmp_path, capsys):
    code, _, err = run_cli(["compress", str(tmp_path / "missing"), "--pass", "quantize"], capsys)
    assert_one_line_error(code, err, r"model .*missing does not exist: pass a Hugging Face save_pretrained folder, an "
                                     r"\.onnx file or folder, an optikit variant directory")


def test_unknown_pass_lists_the_known_ones(digits_teacher, capsys):
    code, _, err = run_cli(["compress", str(digits_teacher.path), "--pass", "quantise"], capsys)
    assert_one_line_error(code, err, r"unknown pass 'quantise': known passes are .*export-onnx.*quantize")


def test_malformed_option(digits_teacher, capsys):
    code, _, err = run_cli(["compress", str(digits_teacher.path), "--pass", "quantize:mode"], capsys)
    assert_one_line_error(code, err, r"malformed option 'mode' .*write key=value")


def test_unknown_pass_option(digits_teacher, capsys):
    code, _, err = run_cli(["compress", str(digits_teacher.path), "--pass", "quantize:bits=4"], capsys)
    assert_one_line_error(code, err, r"unknown option 'bits' for pass 'quantize': known options are")


def test_bad_option_value(digits_teacher, capsys):
    code, _, err = run_cli(["compress", str(digits_teacher.path), "--pass", "quantize:mode=fast"], capsys)
    assert_one_line_error(code, err, r"mode' must be one of auto, dynamic, static, got 'fast'")


def test_csv_without_the_named_columns(text_csv, capsys):
    code, _, err = run_cli(["teach", "minilm-tags", "--data", str(text_csv), "--text-cols", "title,body"], capsys)
    assert_one_line_error(code, err, r"has no column 'body': its columns are id, title, description, tag")


@pytest.mark.parametrize("content, pattern", [
    ("title,description,tag\n", "no labelled rows"),
    ("title,description,tag\n" + "a,b,x\n" * 10, "single class"),
])
def test_empty_or_single_class_dataset(tmp_path, capsys, content, pattern):
    path = tmp_path / "data.csv"
    path.write_text(content)
    code, _, err = run_cli(["teach", "minilm-tags", "--data", str(path)], capsys)
    assert_one_line_error(code, err, pattern)
    assert path.read_text() == content  # the input is untouched


def test_unreadable_model_file(digits_teacher, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(digits_teacher.path, broken)
    (broken / "model.safetensors").write_bytes(b"\x00garbage")
    code, _, err = run_cli(["bench", str(broken), "--out", str(tmp_path / "r")], capsys)
    assert_one_line_error(code, err, r"baseline .* could not be measured: cannot read weights")
    assert not (tmp_path / "r").exists()


def test_unreadable_onnx_file_in_a_chain(digits_teacher, tmp_path, capsys):
    from optikit.api import compress

    onnx_variant = compress(digits_teacher, ["export-onnx"], out=tmp_path / "v")
    (Path(onnx_variant.path) / "model.onnx").write_bytes(b"not an onnx graph")
    code, _, err = run_cli(["compress", str(onnx_variant.path), "--pass", "quantize", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_file_given_as_model(tmp_path, capsys):
    path = tmp_path / "model.bin"
    path.write_bytes(b"x")
    code, _, err = run_cli(["compress", str(path), "--pass", "quantize"], capsys)
    assert_one_line_error(code, err, r"model.bin is a .bin file: pass an .onnx file or the folder that holds the model")
