"""Which dtype to choose the TopK in.

The encoder's dense product (N, d) x (d, n) is the one big matmul of a TopK SAE. Which k
latents win can be decided on bf16 pre-activations (AMX on recent x86 CPUs, tensor cores
on GPUs: ~5x the fp32 rate here); the winners' values are then recomputed exactly
(sae/model.py).
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """True when the CPU multiplies bf16 natively (AMX or AVX512-BF16)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def selection_dtype(device: torch.device) -> torch.dtype:
    """The dtype to compute pre-activations in when only the TopK choice is needed."""
    if device.type == "cuda" or (device.type == "cpu" and cpu_has_fast_bf16()):
        return torch.bfloat16
    return torch.float32
