"""One CPU-feature reader (py-cpuinfo), read once, behind the harness's environment and quantize's weight range."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from optikit import cpu
from optikit.cpu import CpuFeatures, cpu_features


@pytest.fixture
def fake_cpuinfo(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    import cpuinfo

    calls = {"n": 0, "info": {"brand_raw": "Test CPU 9000", "flags": ["avx2", "avx512f", "avx512_vnni", "sse4_2"]}}

    def fake() -> dict:
        calls["n"] += 1
        if isinstance(calls["info"], Exception):
            raise calls["info"]
        return dict(calls["info"])

    monkeypatch.setattr(cpuinfo, "get_cpu_info", fake)
    cpu_features.cache_clear()
    yield calls
    cpu_features.cache_clear()


def test_cpu_features_are_read_once_per_process(fake_cpuinfo: dict) -> None:
    first = cpu_features()
    assert cpu_features() is first and fake_cpuinfo["n"] == 1
    assert first.model == "Test CPU 9000"
    assert first.int8_flags() == {"avx2": True, "avx512f": True, "avx512_vnni": True, "avx_vnni": False,
                                  "amx_int8": False, "amx_bf16": False, "dotprod": False}
    assert first.vnni


def test_arm_dot_product_counts_as_an_int8_flag() -> None:
    assert CpuFeatures("arm", "aarch64", frozenset({"asimd", "asimddp"})).int8_flags()["dotprod"]
    assert not CpuFeatures("arm", "aarch64", frozenset({"asimddp"})).vnni


def test_a_cpu_py_cpuinfo_cannot_read_still_has_a_model_and_no_flags(fake_cpuinfo: dict) -> None:
    fake_cpuinfo["info"] = RuntimeError("unsupported OS")
    features = cpu_features()
    assert features.model and features.flags == frozenset() and not any(features.int8_flags().values())


def test_environment_and_quantize_read_the_same_features(fake_cpuinfo: dict) -> None:
    from optikit.harness.environment import environment
    from optikit.passes._ort_quant import choose_reduce_range

    def cpu_info():  # what results.json records under environment.cpu
        return environment(1, "cpu").cpu

    assert cpu_info().model == "Test CPU 9000" and cpu_info().int8_flags == cpu_features().int8_flags()
    assert choose_reduce_range("auto")[0] is False  # VNNI: full range
    cpu_features.cache_clear()
    fake_cpuinfo["info"] = {"brand_raw": "Old CPU", "flags": ["avx2"]}
    assert choose_reduce_range("auto")[0] is True and cpu_info().int8_flags["avx2"]
    assert fake_cpuinfo["n"] == 2


def test_no_module_parses_proc_cpuinfo_itself() -> None:
    from pathlib import Path

    root = Path(cpu.__file__).parent
    readers = [p.relative_to(root).as_posix() for p in root.rglob("*.py") if "/proc/cpuinfo" in p.read_text()]
    assert readers == []
