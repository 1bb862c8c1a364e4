"""What this CPU can do that decides the fast path: its model name and instruction-set flags.

One reader of ``/proc/cpuinfo`` for the whole package: the fast-path choice (int8 kernels, bf16
arithmetic), the ``auto`` selection's cache key and the benchmark's machine description use it.
"""

from __future__ import annotations

import functools
import platform

import torch

#: CPU features that decide which kernels (and so which fast path) a CPU can use.
CPU_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
#: Flags giving int8 dot products that sum u8 x s8 into 32 bits without saturating 16-bit pairs.
INT8_DOT_PRODUCT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
#: Flags giving bf16 arithmetic (dot products) instead of an emulation.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=1)
def cpu_model_and_flags() -> tuple[str, tuple[str, ...]]:
    """(model name, the flags of :data:`CPU_FLAGS` this CPU has, in that order); read once."""
    model, flags = platform.processor() or platform.machine(), ()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key == "flags" and not flags:
                    present = set(value.split())
                    flags = tuple(flag for flag in CPU_FLAGS if flag in present)
    except OSError:
        pass
    return model, flags


def cpu_flags() -> tuple[str, ...]:
    return cpu_model_and_flags()[1]


def has_int8_dot_product() -> bool:
    """VNNI (AVX-512 or AVX) or AMX-INT8: ONNX Runtime's u8 x s8 kernels are exact and fastest there."""
    return any(flag in cpu_flags() for flag in INT8_DOT_PRODUCT_FLAGS)


def bf16_supported() -> bool:
    """bf16 arithmetic in hardware (AVX-512-BF16 or AMX-BF16) and oneDNN's bf16 kernels in this torch.

    Elsewhere bf16 is emulated and slower than fp32, so no bf16 path is offered.
    """
    if not any(flag in cpu_flags() for flag in BF16_FLAGS):
        return False
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # private API: absent or failing means no
        return False
