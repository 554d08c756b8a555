"""The CPU this process runs on (model name, int8 instruction sets), read once with py-cpuinfo on any OS: the
harness records it and quantize chooses its weight range from it."""
from __future__ import annotations

import functools
import platform
from dataclasses import dataclass

# The int8 instruction sets a reader of latency figures needs, each with the names py-cpuinfo may report it by
# (the Linux kernel's flag names; on ARM `asimddp` is the dot-product extension).
INT8_FLAGS: dict[str, tuple[str, ...]] = {
    "avx2": ("avx2",), "avx512f": ("avx512f",), "avx512_vnni": ("avx512_vnni", "avx512vnni"),
    "avx_vnni": ("avx_vnni", "avxvnni"), "amx_int8": ("amx_int8",), "amx_bf16": ("amx_bf16",),
    "dotprod": ("asimddp", "dotprod"),
}
VNNI = ("avx512_vnni", "avx_vnni", "amx_int8")


@dataclass(frozen=True)
class CpuFeatures:
    model: str
    machine: str
    flags: frozenset[str]

    def int8_flags(self) -> dict[str, bool]:
        return {name: any(alias in self.flags for alias in aliases) for name, aliases in INT8_FLAGS.items()}

    @property
    def vnni(self) -> bool:
        """Whether the CPU has a u8×s8 dot-product instruction (VNNI or AMX), so full-range int8 weights are safe."""
        flags = self.int8_flags()
        return any(flags[name] for name in VNNI)


@functools.cache
def cpu_features() -> CpuFeatures:
    """Read once per process: py-cpuinfo may start a subprocess and takes ~0.2 s."""
    info: dict[str, object] = {}
    try:
        import cpuinfo

        info = cpuinfo.get_cpu_info()
    except Exception:  # an OS py-cpuinfo cannot read still gets its measurements, without flags
        info = {}
    raw_flags = info.get("flags")
    flags = frozenset(str(f).lower() for f in raw_flags) if isinstance(raw_flags, list) else frozenset()
    model = str(info.get("brand_raw") or platform.processor() or platform.machine())
    return CpuFeatures(model, platform.machine(), flags)
