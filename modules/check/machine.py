"""Does this machine run the precision a run asks for natively? The probe, and the message that warns when a 16-bit
precision would be emulated (bf16 on a CPU without AMX or AVX512-BF16 runs far slower than fp32).

Light on purpose (torch only): the server warns with `precision_warning` too. The Lightning callback that warns at
the start of fit/validate/test/predict is `PrecisionGuard` (modules/check/precision_guard.py).
"""

import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from lightning.pytorch import Trainer


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none: macOS, Windows)."""
    path = Path("/proc/cpuinfo")
    if not path.is_file():
        return set()
    for line in path.read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_name() -> str:
    path = Path("/proc/cpuinfo")
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def has_native_16bit(kind: str, device_type: str) -> bool:
    """Whether `device_type` ("cpu", "cuda") computes in `kind` ("bf16" or "16") in hardware.

    CPUs: bf16 with AMX (Sapphire Rapids and later Xeons) or AVX512-BF16 (Cooper Lake, Zen 4 and later); fp16 with
    AMX-FP16 or AVX512-FP16. GPUs: bf16 from Ampere (compute capability 8.0), fp16 tensor cores from Volta (7.0).
    """
    if device_type == "cuda":
        if kind == "bf16":
            return torch.cuda.is_bf16_supported(including_emulation=False)
        return torch.cuda.get_device_capability() >= (7, 0)
    if device_type == "cpu":
        flags = cpu_flags()
        wanted = {"amx_bf16", "avx512_bf16"} if kind == "bf16" else {"amx_fp16", "avx512_fp16"}
        return bool(flags & wanted)
    return True  # MPS, XLA...: no probe; assume the vendor's default precision is native


def precision_kind(precision: str) -> str | None:
    """`bf16` or `16` for a 16-bit Lightning precision ("bf16-mixed", "16-true"...), None for 32/64-bit."""
    precision = str(precision)
    if precision.startswith("bf16"):
        return "bf16"
    if precision.startswith("16"):
        return "16"
    return None


def native_precision(precision: str, device_type: str) -> bool:
    kind = precision_kind(precision)
    return kind is None or has_native_16bit(kind, device_type)


def matmul_slowdown(kind: str, size: int = 256) -> float:
    """How many times slower a `size` x `size` matmul runs in `kind` than in fp32 on this CPU (a few ms in fp32)."""
    dtype = torch.bfloat16 if kind == "bf16" else torch.float16

    def seconds(dt: torch.dtype) -> float:
        a, b = torch.randn(size, size).to(dt), torch.randn(size, size).to(dt)
        a @ b  # warm-up
        start = time.perf_counter()
        a @ b
        return time.perf_counter() - start

    return seconds(dtype) / max(seconds(torch.float32), 1e-9)


def machine_report(trainer: "Trainer") -> dict:
    """Device, precision asked for, whether it is native, CPU model and ISA or GPU name, for `check`'s report."""
    device = trainer.strategy.root_device
    precision = str(trainer.precision)
    report = {
        "device": str(device),
        "precision": precision,
        "native_precision": native_precision(precision, device.type),
        "cpu": cpu_name(),
        "cpu_isa": torch.backends.cpu.get_cpu_capability(),
        "cpu_bf16": sorted(cpu_flags() & {"amx_bf16", "avx512_bf16", "amx_fp16", "avx512_fp16"}),
    }
    if device.type == "cuda":
        report["gpu"] = torch.cuda.get_device_name(device)
    return report


def precision_warning(
    precision: str, device_type: str, flag: str = "--trainer.precision", work: str = "training"
) -> str | None:
    """The guard's message when `precision` (given as `flag`) would be emulated on `device_type`, else None."""
    kind = precision_kind(precision)
    if kind is None or has_native_16bit(kind, device_type):
        return None
    if device_type == "cpu":
        isa = torch.backends.cpu.get_cpu_capability()
        slowdown = f"a matmul measured {matmul_slowdown(kind):.0f}x slower than in fp32 here"
        hardware = f"this CPU ({isa}) has neither AMX nor AVX512-{'BF16' if kind == 'bf16' else 'FP16'}"
    else:
        slowdown = "several times slower than fp32 or a native format"
        hardware = f"this GPU ({torch.cuda.get_device_name()}) has no native {kind}"
    return (
        f"{flag} {precision}: {hardware}, so {kind} is emulated ({slowdown}); {work} will be far slower than needed. "
        f"Use {flag} 32-true (docs/check.md lists the hardware with native bf16)."
    )
