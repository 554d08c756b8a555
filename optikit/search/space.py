"""The search space: which pass chains and settings a trial may pick, as Optuna suggestions → a chain of specs."""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any

from optikit.config import require
from optikit.cpu import CpuFeatures

# ORT's quantization guide: S8S8 runs on x86 only through VNNI/AMX (elsewhere it is converted to U8S8, a cost),
# and QOperator S8S8 is slow on any x86; ARM's dot-product extension multiplies s8×s8 natively in both formats.
S8S8_INSTRUCTIONS = ("amx_int8", "avx512_vnni", "avx_vnni", "dotprod")
# OpenVINO runs bf16 natively only on these; elsewhere a bf16 hint runs f32, a repeat of the fp32 trial.
BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def _this_cpu() -> CpuFeatures:
    from optikit import cpu

    return cpu.cpu_features()  # looked up when called, so a test can stand in another machine


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def optimum_preset(cpu: CpuFeatures) -> str | None:
    """optimum's ORTQuantizer preset written for this CPU, or None where none fits (an x86 without AVX2)."""
    flags = cpu.int8_flags()
    if cpu.machine.lower() in ("arm64", "aarch64"):
        return "arm64"
    return next((preset for preset, flag in (("avx512_vnni", "avx512_vnni"), ("avx512", "avx512f"), ("avx2", "avx2"))
                 if flags[flag]), None)


@dataclass(frozen=True)
class MachineChoices:
    """What a trial may pick on this machine with this install, fixed for a whole study (Optuna needs a
    categorical's choices unchanged between its trials), with the reason for each choice the machine drove."""

    runtimes: tuple[str, ...]
    onnx_quantize: tuple[str, ...]  # none | auto/dynamic/static (onnxruntime) | optimum
    torch_quantize: tuple[str, ...]  # none | dynamic (backend=torch) | neural-compressor
    openvino_precisions: tuple[str, ...]
    static_formats: tuple[str, ...]
    activation_types: tuple[str, ...]  # of static QDQ; QOperator takes int8 activations on ARM only
    optimum_preset: str | None
    reasons: tuple[str, ...]

    @classmethod
    def build(cls, cpu: CpuFeatures, teacher_format: str, optimum_ready: bool) -> MachineChoices:
        from optikit.passes.base import passes

        flags = cpu.int8_flags()
        arm = cpu.machine.lower() in ("arm64", "aarch64")
        reasons = ["reduce_range is not searched: quantize's auto sets it from the CPU (full range with VNNI/AMX "
                   "or on ARM, 7-bit weights otherwise)"]
        preset = optimum_preset(cpu)
        onnx_quantize = ["none", "auto", "dynamic", "static"]
        if not _installed("optimum"):
            reasons.append("optimum not offered: it is not installed")
        elif not optimum_ready:
            reasons.append("optimum not offered: its quantizer needs a Hugging Face export (config.json), which "
                           "this model's chains do not all give")
        elif preset is None:
            reasons.append("optimum not offered: none of its presets (avx512_vnni, avx512, avx2, arm64) fits this CPU")
        else:
            onnx_quantize.append("optimum")
            reasons.append(f"optimum with its {preset} preset: the preset for this CPU")
        s8s8 = [n for n in S8S8_INSTRUCTIONS if flags[n]]
        if s8s8:
            reasons.append(f"static int8 activations (S8S8) offered: the CPU has {'/'.join(s8s8)}"
                           + ("" if arm else " (QDQ only: QOperator S8S8 is slow on x86)"))
        else:
            reasons.append("static activations stay uint8: without VNNI/AMX or ARM dot-product S8S8 is converted")
        torch_quantize = ["none", "dynamic"]
        if _installed("neural_compressor"):
            torch_quantize.append("neural-compressor")
        else:
            reasons.append("neural-compressor not offered: neural_compressor is not installed")
        runtimes = ["onnx"] if teacher_format == "onnx" else ["torch", "onnx"]
        precisions: list[str] = []
        if "export-openvino" in passes.names() and _installed("openvino"):
            runtimes.append("openvino")
            precisions = ["fp32"]
            bf16 = [f for f in BF16_FLAGS if f in cpu.flags]
            if bf16:
                precisions.append("bf16")
                reasons.append(f"OpenVINO bf16 offered: the CPU has {'/'.join(bf16)}")
            else:
                reasons.append("OpenVINO bf16 not offered: without AMX-BF16 or AVX512-BF16 it would run f32")
            if _installed("nncf"):
                precisions.append("int8")
        else:
            reasons.append("OpenVINO not offered: the export-openvino pass or the openvino package is missing")
        return cls(tuple(runtimes), tuple(onnx_quantize), tuple(torch_quantize), tuple(precisions),
                   ("qdq", "qoperator"), ("uint8", "int8") if s8s8 else ("uint8",), preset, tuple(reasons))

    def activation_types_for(self, fmt: str, cpu: CpuFeatures) -> tuple[str, ...]:
        arm = cpu.machine.lower() in ("arm64", "aarch64")
        return self.activation_types if fmt == "qdq" or arm else ("uint8",)


@dataclass(frozen=True)
class SearchSpace:
    """Orthogonal decisions, each a real lever on latency or loss (see STACK.md):

    shrink (none / structured pruning with fine-tuning / distillation into a student) → runtime (torch / ONNX /
    OpenVINO) → quantization: on ONNX, ONNX Runtime's auto, dynamic or static (calibration, QDQ or QOperator, int8
    activations where the CPU multiplies s8×s8) or optimum's preset for this CPU; on torch, torch's dynamic int8
    or Intel Neural Compressor's static int8; on OpenVINO, fp32, bf16 (on CPUs with bf16) or NNCF int8. Each
    quantizer that has one gets `max_loss`, so its accuracy-aware fp32 fallback keeps the budget. What the
    machine and the install allow is fixed when the space is built (`choices`), and recorded (`machine()`).
    """

    students: tuple[str, ...] = ()  # student recipes for the teacher's format; empty: no distillation
    prune_amount: tuple[float, float] = (0.1, 0.7)
    recover_epochs: tuple[int, int] = (1, 4)
    calibrations: tuple[str, ...] = ("minmax", "entropy", "percentile")
    max_loss: float | None = None  # handed to quantize so its fp32 fallback respects the search's budget
    # The baseline's format: an ONNX-only model (imported from a .onnx file) has no torch weights to prune,
    # distill or export, so its levers are quantization and conversion to OpenVINO.
    teacher_format: str = "torch"
    # An ONNX baseline imported with its Hugging Face config.json: optimum's quantizer can read it.
    teacher_has_hf_config: bool = False
    cpu: CpuFeatures = field(default_factory=_this_cpu)  # the machine the choices are made for
    choices: MachineChoices = field(init=False, repr=False)

    def __post_init__(self) -> None:
        lo, hi = self.prune_amount
        require(0 < lo < hi < 1, f"prune_amount must be 0 < low < high < 1, got {self.prune_amount}")
        require(1 <= self.recover_epochs[0] <= self.recover_epochs[1], "recover_epochs must be 1 ≤ low ≤ high")
        object.__setattr__(self, "choices", MachineChoices.build(self.cpu, self.teacher_format,
                                                                 self._reaches_onnx_with_hf_config()))

    def _reaches_onnx_with_hf_config(self) -> bool:
        """Whether every chain's ONNX model has config.json (optimum needs it): Hugging Face models and students."""
        if self.teacher_format == "onnx":
            return self.teacher_has_hf_config
        if self.teacher_format != "hf":
            return False
        from optikit.recipes import load_recipe

        try:
            return all(load_recipe(s, "students").format == "hf" for s in self.students)
        except Exception:  # noqa: BLE001 - a student that cannot be read: optimum is simply not offered
            return False

    def suggest(self, trial: Any) -> list[str]:
        """One chain of pass specs (`name:key=value,…`) from the trial's choices; empty means the teacher itself."""
        chain: list[str] = []
        onnx_only = self.teacher_format == "onnx"
        shrinks = ["none"] if onnx_only else ["none", "prune", *(["distill"] if self.students else [])]
        shrink = trial.suggest_categorical("shrink", shrinks)
        if shrink == "prune":
            amount = trial.suggest_float("prune_amount", *self.prune_amount, step=0.05)
            epochs = trial.suggest_int("recover_epochs", *self.recover_epochs)
            chain.append(f"prune-structured:amount={amount:.2f},recover=finetune,recover_epochs={epochs}")
        elif shrink == "distill":
            chain.append(f"distill:student={trial.suggest_categorical('student', list(self.students))}")
        runtime = trial.suggest_categorical("runtime", list(self.choices.runtimes))
        if runtime == "onnx":
            if not onnx_only:
                chain.append("export-onnx")
            step = self._onnx_quantize(trial)
        elif runtime == "openvino":
            step = self._openvino(trial)
        else:
            step = self._torch_quantize(trial)
        return chain + ([step] if step else [])

    def _budget(self) -> str:
        return f",max_loss={self.max_loss:g}" if self.max_loss is not None else ""

    def _per_channel(self, trial: Any) -> str:
        return str(trial.suggest_categorical("per_channel", [True, False])).lower()

    def _onnx_quantize(self, trial: Any) -> str | None:
        quant = trial.suggest_categorical("quantize", list(self.choices.onnx_quantize))
        if quant == "none":
            return None
        per_channel = self._per_channel(trial)
        if quant == "optimum":  # its preset as shipped: it takes no accuracy budget
            return f"quantize:backend=optimum,optimum_preset={self.choices.optimum_preset},per_channel={per_channel}"
        if quant == "static":
            calibration = trial.suggest_categorical("calibration", list(self.calibrations))
            fmt = trial.suggest_categorical("static_format", list(self.choices.static_formats))
            activations = self.choices.activation_types_for(fmt, self.cpu)
            # One parameter per format: a categorical keeps its choices in every trial of a study.
            activation = trial.suggest_categorical(f"activation_type_{fmt}", list(activations))
            return (f"quantize:mode=static,calibration={calibration},format={fmt},activation_type={activation},"
                    f"per_channel={per_channel}{self._budget()}")
        return f"quantize:mode={quant},per_channel={per_channel}{self._budget()}"

    def _torch_quantize(self, trial: Any) -> str | None:
        quant = trial.suggest_categorical("torch_quantize", list(self.choices.torch_quantize))
        if quant == "dynamic":
            return f"quantize:backend=torch,per_channel={self._per_channel(trial)}{self._budget()}"
        if quant == "neural-compressor":
            return f"quantize:backend=neural-compressor{self._budget()}"
        return None

    def _openvino(self, trial: Any) -> str:
        precision = trial.suggest_categorical("openvino_precision", list(self.choices.openvino_precisions))
        return f"export-openvino:precision={precision}" + (self._budget() if precision == "int8" else "")

    def capabilities(self) -> list[str]:
        """The CPU's int8 and bf16 instruction sets that drive the choices."""
        return [n for n, on in self.cpu.int8_flags().items() if on] + [f for f in BF16_FLAGS[1:] if f in self.cpu.flags]

    def searched_on(self) -> str:
        """One line for the search's output: the machine whose choices were searched."""
        return f"searched on {self.cpu.model} ({self.cpu.machine}; {', '.join(self.capabilities()) or 'no int8 extensions'})"

    def machine(self) -> dict[str, Any]:
        """What results.json and search.json record about the machine and the choices it drove."""
        c = self.choices
        return {"cpu": self.cpu.model, "machine": self.cpu.machine, "capabilities": self.capabilities(),
                "choices": {"runtime": list(c.runtimes), "quantize": list(c.onnx_quantize),
                            "torch_quantize": list(c.torch_quantize), "openvino_precision": list(c.openvino_precisions),
                            "static_format": list(c.static_formats), "activation_type": list(c.activation_types),
                            "optimum_preset": c.optimum_preset},
                "reasons": list(c.reasons)}


def students_for(teacher: Any) -> tuple[str, ...]:
    """Student recipes for a teacher: its format as a string (a CNN teacher gets CNN students, a BERT gets MiniLMs),
    or the teacher Variant itself, which also tells image teachers apart. The any-size image CNN is offered only to
    the image teachers `distill:student=auto` gives it to (Hugging Face image classifiers, CNNs other than
    digits-cnn): they get it alone, since the digits and text students cannot take them."""
    from optikit.passes.distill import AUTO_STUDENTS, auto_student
    from optikit.recipes import builtin_recipes, load_recipe

    image_student = AUTO_STUDENTS["image"]
    if not isinstance(teacher, str):
        if auto_student(teacher) == image_student:
            return (image_student,)
        teacher = teacher.format
    out = []
    for name in sorted(builtin_recipes("students")):
        if name == image_student:
            continue
        try:
            if load_recipe(name, "students").format == teacher:
                out.append(name)
        except Exception:  # noqa: BLE001 - an unreadable recipe is simply not offered
            continue
    return tuple(out)
