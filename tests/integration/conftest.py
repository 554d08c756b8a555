"""Integration fixtures: tiny matrices over the fast digits teacher, run through the real CLI."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

# Passes that fail on purpose, loaded into each cell through the matrix's `plugins` list.
CRASH_PLUGIN = '''
"""Test passes: one segfaults inside the cell process, one raises."""
from dataclasses import dataclass

from optikit.passes.base import Pass, passes


@dataclass(frozen=True)
class NoOptions:
    pass


class Segfault(Pass):
    name = "test-segfault"
    Config = NoOptions
    accepts = frozenset({"torch", "hf", "onnx"})

    def apply(self, variant, ctx, out):
        import ctypes

        ctypes.string_at(0)  # a native crash: no Python exception can catch it


class Raises(Pass):
    name = "test-raises"
    Config = NoOptions
    accepts = frozenset({"torch", "hf", "onnx"})

    def apply(self, variant, ctx, out):
        raise RuntimeError("deliberate failure in a pass")


for cls in (Segfault, Raises):
    if cls.name not in passes.names():
        passes.register(cls.name, cls)
'''


def matrix_file(path: Path, teacher: Path, variants: str, gate: str = "", plugins: str = "") -> Path:
    path.write_text(textwrap.dedent(f'''
        name = "{path.stem}"
        teachers = ["{teacher}"]
        batch_sizes = [1, 8]
        threads = 1
        {plugins}
        [latency]
        min_iterations = 5
        min_seconds = 0.05
        warmup_max = 10
        [variants]
        {variants}
        {gate}
    '''))
    return path


def run_cli(*args: str) -> int:
    """`optikit ARGS` in this process; returns the exit code (0 when the command returns normally)."""
    from optikit.cli import main

    try:
        main(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


@pytest.fixture(scope="session")
def crash_plugin(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The plugin module's name, importable here and (through PYTHONPATH) in every cell process."""
    import os
    import sys

    folder = tmp_path_factory.mktemp("plugins")
    (folder / "optikit_test_crash_passes.py").write_text(CRASH_PLUGIN)
    sys.path.insert(0, str(folder))
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(folder), old]))
    yield "optikit_test_crash_passes"
    from optikit.passes.base import passes

    for name in ("test-segfault", "test-raises"):
        passes.unregister(name)
    sys.path.remove(str(folder))
    if old is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old


@pytest.fixture(scope="session")
def two_cell_run(tmp_path_factory: pytest.TempPathFactory, digits_teacher) -> Path:
    """baseline + onnx, gated with rules that hold: the run every integration test reads."""
    root = tmp_path_factory.mktemp("matrix")
    m = matrix_file(root / "two.toml", digits_teacher.path, 'onnx = ["export-onnx"]', gate='''
        [[gate]]
        kind = "max-f1-drop"
        points = 1.0
        [[gate]]
        kind = "no-failures"
    ''')
    out = root / "out"
    # --allow-noisy: these tests are about the matrix's own rules, not about how busy this machine was (the gate's
    # fairness rule is tested with crafted readings in tests/unit/report/test_conditions_verdict.py).
    code = run_cli("bench", str(m), "--out", str(out), "--gate", "--allow-noisy")
    assert code == 0, (out / "summary.md").read_text() if (out / "summary.md").exists() else "no summary"
    return out
