"""The search space offers the backends and options this machine and this install can run, and only chains the
passes accept: checked on stand-in CPUs and installs, without running any pass."""
from __future__ import annotations

import importlib.util
import json

import pytest

from optikit.cpu import CpuFeatures
from optikit.passes.base import make_pass, passes, plan_chain
from optikit.search.space import SearchSpace

optuna = pytest.importorskip("optuna")

EPYC_AVX2 = CpuFeatures("AMD EPYC 7B13", "x86_64", frozenset({"avx2", "fma"}))
SKYLAKE_AVX512 = CpuFeatures("Intel Xeon Gold 6148", "x86_64", frozenset({"avx2", "avx512f"}))
COOPER_LAKE = CpuFeatures("Intel Xeon 8380H", "x86_64", frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}))
SAPPHIRE_RAPIDS = CpuFeatures("Intel Xeon Platinum 8480+", "x86_64",
                              frozenset({"avx2", "avx512f", "avx512_vnni", "amx_int8", "amx_bf16"}))
GRAVITON = CpuFeatures("Neoverse-N1", "aarch64", frozenset({"asimd", "asimddp"}))
OLD_X86 = CpuFeatures("Intel Atom", "x86_64", frozenset({"sse4_2"}))
CPUS = [EPYC_AVX2, SKYLAKE_AVX512, COOPER_LAKE, SAPPHIRE_RAPIDS, GRAVITON, OLD_X86]
EVERYTHING = frozenset({"optimum", "neural_compressor", "openvino", "nncf"})


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch):
    """Makes only the named optional packages importable, for the space and the passes alike."""
    real = importlib.util.find_spec

    def install(modules: frozenset[str], *, openvino_pass: bool = True) -> None:
        def find_spec(name: str, package: str | None = None):
            if name.split(".")[0] in EVERYTHING - modules:
                return None
            return real(name, package)

        monkeypatch.setattr(importlib.util, "find_spec", find_spec)
        registered = [n for n in passes.names() if openvino_pass or n != "export-openvino"]
        monkeypatch.setattr(passes, "names", lambda: registered)

    return install


def _chains(space: SearchSpace, n: int, seed: int = 0) -> list[list[str]]:
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(space.suggest(trial))
        study.tell(trial, [1.0, 0.0])
    return out


def _space(teacher_format: str, cpu: CpuFeatures, **kw) -> SearchSpace:
    students = {"torch": ("cnn-small",), "hf": ("minilm-l2", "minilm-l3"), "onnx": ()}[teacher_format]
    return SearchSpace(students=students, max_loss=0.01, teacher_format=teacher_format, cpu=cpu, **kw)


@pytest.mark.parametrize("cpu", CPUS, ids=lambda c: c.model)
@pytest.mark.parametrize("modules", [EVERYTHING, frozenset({"openvino"}), frozenset()], ids=["all", "ov", "none"])
@pytest.mark.parametrize(("teacher_format", "hf_config"), [("torch", False), ("hf", False), ("onnx", True),
                                                           ("onnx", False)])
def test_every_suggested_chain_is_one_its_passes_accept(cpu: CpuFeatures, modules: frozenset[str],
                                                        teacher_format: str, hf_config: bool, installed) -> None:
    installed(modules)
    space = _space(teacher_format, cpu, teacher_has_hf_config=hf_config)
    chains = _chains(space, 80)
    for chain in chains:
        # make_pass refuses an option the backend does not take and a backend whose package is missing.
        plan_chain(teacher_format, [make_pass(step) for step in chain])
    steps = [s for c in chains for s in c]
    assert ("neural-compressor" in " ".join(steps)) == (teacher_format != "onnx" and "neural_compressor" in modules)
    assert not any("optimum" in s for s in steps) or "optimum" in modules
    assert not any("precision=int8" in s for s in steps) or "nncf" in modules
    assert any(s.startswith("export-openvino") for s in steps) == ("openvino" in modules)


def test_the_openvino_runtime_needs_its_pass_registered(installed) -> None:
    installed(EVERYTHING, openvino_pass=False)
    space = _space("torch", SAPPHIRE_RAPIDS)
    assert space.choices.runtimes == ("torch", "onnx")
    assert not any(s.startswith("export-openvino") for c in _chains(space, 60) for s in c)


def test_a_chain_with_an_option_its_backend_does_not_take_is_refused() -> None:
    """What the validity check above relies on: optimum takes no budget, neural-compressor no per_channel."""
    from optikit.errors import ConfigError

    for step in ("quantize:backend=optimum,optimum_preset=avx2,max_loss=0.01",
                 "quantize:backend=neural-compressor,per_channel=true", "quantize:mode=dynamic,format=qdq"):
        with pytest.raises(ConfigError):
            make_pass(step)


@pytest.mark.parametrize(("cpu", "preset", "qdq", "qoperator", "bf16"), [
    (EPYC_AVX2, "avx2", ("uint8",), ("uint8",), False),
    (SKYLAKE_AVX512, "avx512", ("uint8",), ("uint8",), False),
    (COOPER_LAKE, "avx512_vnni", ("uint8", "int8"), ("uint8",), True),
    (SAPPHIRE_RAPIDS, "avx512_vnni", ("uint8", "int8"), ("uint8",), True),
    (GRAVITON, "arm64", ("uint8", "int8"), ("uint8", "int8"), False),
    (OLD_X86, None, ("uint8",), ("uint8",), False),
], ids=lambda v: getattr(v, "model", None))
def test_the_choices_follow_the_cpu(cpu: CpuFeatures, preset: str | None, qdq: tuple[str, ...],
                                    qoperator: tuple[str, ...], bf16: bool, installed) -> None:
    installed(EVERYTHING)
    choices = _space("hf", cpu).choices
    assert choices.optimum_preset == preset
    assert ("optimum" in choices.onnx_quantize) == (preset is not None)
    # int8 activations only where s8×s8 is native (VNNI/AMX, ARM dot-product), and QOperator S8S8 only on ARM.
    assert choices.activation_types_for("qdq", cpu) == qdq
    assert choices.activation_types_for("qoperator", cpu) == qoperator
    assert ("bf16" in choices.openvino_precisions) == bf16
    steps = [s for c in _chains(_space("hf", cpu), 150) for s in c]
    assert not any("reduce_range" in s for s in steps)  # left to quantize's auto: the CPU decides
    assert any("activation_type=int8" in s for s in steps) == ("int8" in qdq)
    assert any("precision=bf16" in s for s in steps) == bf16
    assert all(f"optimum_preset={preset}" in s for s in steps if "backend=optimum" in s)


@pytest.mark.parametrize(("teacher_format", "students", "hf_config", "offered"), [
    ("torch", ("cnn-small",), False, False),  # a torch export has no config.json for optimum to read
    ("hf", ("minilm-l2", "minilm-l3"), False, True),
    ("hf", ("image-cnn-small",), False, False),  # a torch student of a Hugging Face teacher
    ("onnx", (), True, True),
    ("onnx", (), False, False),
])
def test_optimum_is_offered_only_where_its_quantizer_finds_a_hugging_face_config(
        teacher_format: str, students: tuple[str, ...], hf_config: bool, offered: bool, installed) -> None:
    installed(EVERYTHING)
    space = SearchSpace(students=students, teacher_format=teacher_format, teacher_has_hf_config=hf_config,
                        cpu=SAPPHIRE_RAPIDS)
    assert ("optimum" in space.choices.onnx_quantize) == offered


def test_the_choices_are_fixed_when_the_space_is_built(installed, monkeypatch: pytest.MonkeyPatch) -> None:
    import optikit.cpu

    installed(EVERYTHING)
    monkeypatch.setattr(optikit.cpu, "cpu_features", lambda: SAPPHIRE_RAPIDS)
    space = SearchSpace(students=("minilm-l2",), max_loss=0.01, teacher_format="hf")
    assert space.cpu == SAPPHIRE_RAPIDS  # the running machine, unless told another
    before = space.choices
    installed(frozenset())  # what changes after the space is built does not reach the study's trials
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=1))
    seen: dict[str, object] = {}
    for _ in range(120):
        trial = study.ask()
        space.suggest(trial)
        for name, distribution in trial.distributions.items():
            assert seen.setdefault(name, distribution) == distribution, name
        study.tell(trial, [1.0, 0.0])
    assert space.choices == before
    assert {"quantize", "torch_quantize", "openvino_precision", "static_format", "activation_type_qdq"} <= set(seen)


def test_the_space_says_which_machine_it_was_built_for(installed) -> None:
    installed(frozenset())
    space = _space("torch", EPYC_AVX2)
    assert space.searched_on() == "searched on AMD EPYC 7B13 (x86_64; avx2)"
    record = json.loads(json.dumps(space.machine()))
    assert record["cpu"] == "AMD EPYC 7B13" and record["capabilities"] == ["avx2"]
    assert record["choices"]["runtime"] == ["torch", "onnx"]
    assert record["choices"]["activation_type"] == ["uint8"]
    reasons = " ".join(record["reasons"])
    assert "neural_compressor is not installed" in reasons and "OpenVINO not offered" in reasons
    assert "static activations stay uint8" in reasons
    assert _space("torch", OLD_X86).searched_on().endswith("(x86_64; no int8 extensions)")


def test_the_search_summary_names_the_machine_searched_on(tmp_path) -> None:
    from optikit.harness.records import Environment, Task
    from optikit.harness.results import Results
    from optikit.search.study import SearchConfig, SearchOutcome, TrialOutcome, summary

    teacher = TrialOutcome(-1, (), {}, "baseline", "ok", 0.0, 1.0)
    results = Results([], "baseline", Task.from_dict({}), Environment.from_dict({}), {})
    outcome = SearchOutcome((teacher,), (teacher,), teacher, results, {}, "searched on AMD EPYC 7B13 (x86_64; avx2)")
    assert summary(outcome, SearchConfig()).splitlines()[0] == "searched on AMD EPYC 7B13 (x86_64; avx2)"
