"""What this machine can do: the CPU's int8 instruction sets, the choices they drove in each quantized variant,
and a warning where a variant's choices were made on a CPU that differs from the one it was measured on."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from optikit.cpu import VNNI
from optikit.harness.compare import display_names
from optikit.harness.results import Results, VariantResult

# The instruction sets a reader of int8 figures needs, in the order they matter, with what each one buys.
CAPABILITIES = (
    ("avx2", "AVX2: 256-bit integer SIMD, the floor for fast int8 on x86"),
    ("avx512f", "AVX-512: 512-bit SIMD"),
    ("avx512_vnni", "AVX-512 VNNI: one-instruction u8×s8 dot products (full-range int8 weights are safe)"),
    ("avx_vnni", "AVX-VNNI: the same dot products on 256-bit registers"),
    ("amx_int8", "AMX int8: tile matrix multiply for int8 GEMMs"),
    ("amx_bf16", "AMX bf16: tile matrix multiply for bfloat16"),
    ("dotprod", "ARM dot product (sdot/udot): native int8 × int8"),
)


@dataclass(frozen=True)
class Choices:
    """One quantized variant: what its quantize pass chose and why, and where that does not fit this machine."""

    name: str
    made_on: str
    choices: tuple[str, ...]
    misfits: tuple[str, ...]


def capabilities(results: Results) -> list[tuple[str, bool, str]]:
    flags = results.environment.cpu.int8_flags
    return [(name, bool(flags.get(name)), meaning) for name, meaning in CAPABILITIES if name in flags]


def _has_vnni(flags: Mapping[str, Any]) -> bool:
    return any(flags.get(name) for name in VNNI)


def misfits(report: Mapping[str, Any], here_model: str, here_flags: Mapping[str, Any]) -> list[str]:
    """Why a variant's int8 choices may not hold on the machine measuring it (empty when they do, or unknown)."""
    made = report.get("made_on")
    if not isinstance(made, Mapping):
        return []
    there_flags = made.get("int8_flags") or {}
    out = []
    if report.get("reduce_range") is False and _has_vnni(there_flags) and here_flags and not _has_vnni(here_flags):
        out.append("its full-range int8 weights were chosen for a CPU with VNNI/AMX; this CPU has neither, where "
                   "u8×s8 products can saturate: quantize it again here (reduce_range=auto picks 7-bit weights)")
    if report.get("trial") and made.get("model") and made.get("model") != here_model:
        out.append(f"its int8 layers were chosen by timing on {made.get('model')}, not on this CPU: quantize it "
                   "again here to time the candidates on this machine")
    if report.get("activation_type") == "int8" and there_flags.get("dotprod") and not here_flags.get("dotprod", True):
        out.append("its int8 activations suit ARM's dot product, which this CPU lacks: quantize it again here")
    return out


def _choices(report: Mapping[str, Any]) -> list[str]:
    out = []
    if report.get("mode_reason"):
        out.append(f"mode {report.get('mode')}: {str(report['mode_reason']).split(': ', 1)[-1]}")
    elif report.get("mode"):
        out.append(f"mode {report.get('mode')} (named by the user)")
    if "reduce_range" in report:
        bits = "7-bit" if report["reduce_range"] else "full 8-bit"
        out.append(f"{bits} weights: {report.get('reduce_range_reason', '')}")
    if report.get("activation_type"):
        out.append(f"{report['activation_type']} activations")
    trial = report.get("trial")
    if isinstance(trial, Mapping):
        out.append(f"layers: {trial.get('chosen')}: {trial.get('reason')}")
    return out


def choices(results: Results) -> list[Choices]:
    """The quantized variants' choices; variants without a recorded choice (not quantized) are left out."""
    cpu = results.environment.cpu
    rows = []
    for v, name in zip(results.variants, display_names(results.variants), strict=True):
        report = _quantize_report(v)
        if not report:
            continue
        made = report.get("made_on") or {}
        rows.append(Choices(name, str(made.get("model") or "not recorded"), tuple(_choices(report)),
                            tuple(misfits(report, cpu.model, cpu.int8_flags))))
    return rows


def _quantize_report(v: VariantResult) -> Mapping[str, Any]:
    report = v.pass_report or {}
    return report if report.get("backend") and ("reduce_range" in report or "mode" in report) else {}
