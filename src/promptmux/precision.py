"""Which numeric precision a run computes in: decided once from the config and the hardware.

bf16 autocast pays off only where the hardware multiplies bf16 natively: CUDA GPUs from Ampere on,
x86 CPUs with AMX or AVX512-BF16 (measured on an AMX CPU: bf16 matmuls about 7x faster than
fp32), ARM CPUs with the BF16 extension. Elsewhere PyTorch emulates bf16 matmuls, and they run
far slower than fp32 (measured on an AMD EPYC without AVX-512: 0.8 vs 65 GFLOP/s, 80x). So
`train.precision: auto` (the default) means bf16 where it is native and fp32 elsewhere; an
explicit `bf16` is honoured, with a warning where it is emulated.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from pathlib import Path

import torch

log = logging.getLogger("promptmux.precision")

PRECISIONS = ("auto", "bf16", "fp32")


@functools.cache
def _cpu_flags() -> frozenset[str]:
    """The feature flags of the first CPU in /proc/cpuinfo (empty where there is no such file)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86, ARM
            return frozenset(value.split())
    return frozenset()


@functools.cache
def _cpu_native_bf16() -> bool:
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # private, hence getattr
    if any(getattr(torch.cpu, name, lambda: False)() for name in probes):
        return True
    return bool(_cpu_flags() & {"amx_bf16", "avx512_bf16", "bf16"})


def native_bf16(device: torch.device | str) -> bool:
    """Whether `device` multiplies bf16 natively (so bf16 autocast makes a run faster)."""
    kind = torch.device(device).type
    if kind == "cpu":
        return _cpu_native_bf16()
    if kind == "cuda":
        try:  # newer releases count emulated bf16 as supported unless told not to
            return torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:
            return torch.cuda.is_bf16_supported()
    return False


def resolve_precision(requested: str, device: torch.device | str, warn: bool = True) -> str:
    """`auto`, `bf16` or `fp32` (the config's value) -> the precision a run uses, `bf16` or `fp32`.

    Args:
        requested: `train.precision` (or a `--precision` option).
        device: the device the run computes on.
        warn: log a warning when an explicit `bf16` will be emulated (once per run, not per pass).
    """
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if requested == "fp32":
        return "fp32"
    native = native_bf16(device)
    if requested == "auto":
        return "bf16" if native else "fp32"
    if warn and not native:
        log.warning(
            "precision bf16 on %s: this hardware has no native bf16 matmul (AMX, AVX512-BF16, Ampere+), "
            "so bf16 runs emulated and far slower than fp32; use precision auto or fp32",
            torch.device(device).type,
        )
    return "bf16"


def serving_precision(trained: str, device: torch.device | str) -> str:
    """The precision to predict with when the caller names none: the bundle's training precision,
    except that a bf16 bundle predicts in fp32 on hardware that would emulate bf16."""
    if trained == "auto":
        return resolve_precision("auto", device)
    if trained == "bf16" and not native_bf16(device):
        log.info("the bundle trained in bf16; this %s has no native bf16, so it predicts in fp32", torch.device(device).type)
        return "fp32"
    return trained


def autocast(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on `device` for `bf16` (and for `auto` where bf16 is native); else nothing."""
    if resolve_precision(precision, device, warn=False) == "bf16":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
