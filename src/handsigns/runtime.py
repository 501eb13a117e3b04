"""Where and how a run computes: the device, the precision, the math settings, seeding, the memory layout and
autocast. What computed it (the machine fingerprint) is :mod:`handsigns.fingerprint`."""

from __future__ import annotations

import os
import random
import re

import numpy as np
import torch
import torch.utils.deterministic

from handsigns.errors import UserError
from handsigns.gpus import claim_gpu


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """The device ``train.device`` names. ``auto`` and ``cuda`` with several GPUs: under torchrun (``local_rank``)
    each process takes its own; a single process takes one no other run holds (:func:`claim_gpu`)."""
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        else:
            return torch.device("cpu")
    if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", name):
        raise UserError(f"params.yaml: train.device = {name!r} is not allowed; use auto, cpu, cuda, cuda:N or mps")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"params.yaml: train.device = {name!r} but CUDA is not available here; use auto or cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UserError(f"params.yaml: train.device = {name!r} but only {torch.cuda.device_count()} GPU(s) exist")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"params.yaml: train.device = {name!r} but MPS is not available here; use auto or cpu")
    if device.type == "cuda" and device.index is None:
        if local_rank is not None:
            return torch.device("cuda", local_rank)
        if torch.cuda.device_count() > 1:
            return torch.device("cuda", claim_gpu(torch.cuda.device_count()))
    return device


# bf16 pays where the hardware multiplies bf16 matrices: Ampere (compute capability 8.0) and later GPUs, and CPUs
# with AMX tiles. Emulated, it is slower than fp32: a T4 or V100 (7.x) converts every operand; a CPU with
# AVX512-BF16 but no AMX ran the notes' Net about 30 % slower in bf16 than in fp32 (docs/speed.md).
BF16_MIN_CAPABILITY = (8, 0)


def bf16_pays(device: torch.device) -> bool:
    """Whether bf16 is faster than fp32 on ``device``: a CUDA GPU of compute capability 8.0 or later, or a CPU
    with AMX. Not torch's ``is_bf16_supported()``, which also answers yes where bf16 is emulated."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= BF16_MIN_CAPABILITY
    if device.type == "cpu":
        return bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())  # private in torch 2.x
    return False


def resolve_precision(name: str, device: torch.device) -> str:
    """auto: bf16 where it is faster than fp32 (:func:`bf16_pays`; on a 2-core Xeon with AMX, 2.0-2.1x fp32's
    images/s in channels_last, as accurate over seeds: docs/speed.md), fp32 elsewhere. bf16 needs no loss
    scaling."""
    if name == "auto":
        return "bf16" if bf16_pays(device) else "fp32"
    if name == "fp16" and device.type == "cpu":
        raise UserError("params.yaml: train.precision = fp16 needs a GPU; use fp32 or bf16 on the CPU")
    if name == "bf16" and device.type == "cuda" and not bf16_pays(device):
        major, minor = torch.cuda.get_device_capability(device)
        raise UserError(
            f"params.yaml: train.precision = bf16 but this GPU (compute capability {major}.{minor}) only emulates "
            "it, slower than fp32; use fp16 or fp32"
        )
    return name


def configure_math(device: torch.device, tf32: bool) -> None:
    """TF32 (10-bit mantissa) for fp32 matrix products and convolutions on CUDA: ``train.tf32``. Off, an fp32
    run computes in fp32 on every GPU; torch's own defaults differ between matmul (off) and cuDNN (on)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32


def channels_last(device: torch.device) -> bool:
    """Train in channels_last (NHWC) memory layout: faster for these convolutions on CUDA and on the CPUs
    measured (2-core Intel Xeon and AMD EPYC: 1.6-1.8x fp32's images/s); MPS keeps the default layout."""
    return device.type in ("cuda", "cpu")


def autocast(device: torch.device, precision: str):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def seed_everything(seed: int, device: torch.device, deterministic: bool, compiled: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if device.type == "cpu" or deterministic:
        if compiled or not hasattr(torch._C, "_set_deterministic_algorithms"):
            torch.use_deterministic_algorithms(True, warn_only=False)
        else:  # the same switch without importing Inductor to set its flag too: 1.5 s of a 30 s train stage
            torch._C._set_deterministic_algorithms(True, warn_only=False)
        # Filling each new tensor with NaN is a check for reads of uninitialised memory, which the byte-for-byte
        # tests would catch anyway: 6 % of a CPU epoch, same bytes without it. (A property of the module's class,
        # which mypy does not see.)
        torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
