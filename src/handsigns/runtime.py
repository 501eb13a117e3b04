"""Where and how a run computes: the device, the precision, seeding, and the fingerprint of the machine and
software that ran (``metrics/fingerprint.json``), which the gate compares to tell runs apart.

torch is imported inside the functions: ``handsigns gate`` reads :data:`DECIDING_KEYS` without loading it."""

from __future__ import annotations

import os
import platform
import random
import re
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from handsigns.errors import UserError

if TYPE_CHECKING:
    import torch

# The fingerprint keys that decide a run's floating-point result: the same values give the same bytes; other
# kernels, thread counts or library versions give other, equally valid, last bits (``handsigns gate``).
# Libraries whose code shapes the outputs' bytes (decoding, curves, export) besides torch.
LIBRARIES = ("numpy", "pillow", "onnx", "onnxscript", "onnxruntime", "safetensors", "dvclive")
DECIDING_KEYS = (
    *("device", "device_name", "cpu_capability", "torch_threads", "torch", "precision"),
    *("gpu", "gpu_capability", "cuda", "cudnn", "tf32_matmul", "tf32_cudnn"),
    *LIBRARIES,
)


def class_changes(before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[str]:
    """The deciding keys on which two fingerprints differ: none when the runs are of one machine class (same
    bytes), or when either fingerprint is missing."""
    if not before or not after:
        return []
    return [k for k in DECIDING_KEYS if before.get(k) != after.get(k)]


def claim_gpu(count: int, lock_dir: Path | None = None) -> int:
    """The index of a GPU no other run on this machine holds, held until this process exits (an advisory lock
    file per GPU; the kernel releases it however the process ends). ``dvc queue start -j N`` runs N experiments
    at once in one environment: without this, all N would land on ``cuda:0``. When every GPU is held, wait for
    one (chosen by process id, so waiting runs spread)."""
    import fcntl

    lock_dir = lock_dir or Path(tempfile.gettempdir()) / f"handsigns-gpus-{os.getuid()}"
    lock_dir.mkdir(parents=True, exist_ok=True)

    def lock(index: int, wait: bool) -> bool:
        fd = os.open(lock_dir / f"gpu{index}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        _HELD.append(fd)  # kept open for the process's life: closing it would release the GPU
        return True

    for index in range(count):
        if lock(index, wait=False):
            return index
    index = os.getpid() % count
    print(f"train: all {count} GPUs are held by other runs; waiting for cuda:{index}", flush=True)
    lock(index, wait=True)
    return index


_HELD: list[int] = []


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """The device ``train.device`` names. ``auto`` and ``cuda`` with several GPUs: under torchrun (``local_rank``)
    each process takes its own; a single process takes one no other run holds (:func:`claim_gpu`)."""
    import torch

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
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= BF16_MIN_CAPABILITY
    if device.type == "cpu":
        return bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())  # private in torch 2.x
    return False


def resolve_precision(name: str, device: torch.device) -> str:
    """auto: bf16 where it is faster than fp32 (:func:`bf16_pays`; on a 2-core Xeon with AMX, 2.0-2.1x fp32's
    images/s in channels_last, as accurate over seeds: docs/speed.md), fp32 elsewhere. bf16 needs no loss
    scaling."""
    import torch

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
    import torch

    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32


def channels_last(device: torch.device) -> bool:
    """Train in channels_last (NHWC) memory layout: faster for these convolutions on CUDA and on the CPUs
    measured (2-core Intel Xeon and AMD EPYC: 1.6-1.8x fp32's images/s); MPS keeps the default layout."""
    return device.type in ("cuda", "cpu")


def autocast(device: torch.device, precision: str):
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def seed_everything(seed: int, device: torch.device, deterministic: bool, compiled: bool = False) -> None:
    import numpy as np
    import torch
    import torch.utils.deterministic

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if device.type == "cpu" or deterministic:
        if compiled or not hasattr(torch._C, "_set_deterministic_algorithms"):
            torch.use_deterministic_algorithms(True, warn_only=False)
        else:  # the same switch without importing Inductor to set its flag too: 1.5 s of a 30 s train stage
            torch._C._set_deterministic_algorithms(True, warn_only=False)
        # Filling each new tensor with NaN is a check for reads of uninitialised memory, which the byte-for-byte
        # tests would catch anyway: 6 % of a CPU epoch, same bytes without it.
        torch.utils.deterministic.fill_uninitialized_memory = False
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _library_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def machine_names(info: dict[str, Any]) -> dict[str, Any]:
    """What names a run's machine in ``dvc exp show`` (metrics/runtime.json), from its fingerprint: device type,
    device model ("AMD EPYC 7B13", "Intel Xeon Platinum 8480C", "NVIDIA H200") and precision; on a GPU also its
    compute capability, driver and whether TF32 was on (two fp32 runs on a V100 and an A100 differ by it)."""
    name = re.sub(r"\((R|TM)\)|\bCPU\b.*|\b(\d+-Core )?Processor\b", "", str(info["device_name"]))
    names: dict[str, Any] = {
        "device": str(info["device"]).split(":")[0],
        "device_name": " ".join(name.split()),
        "precision": str(info["precision"]),
    }
    if info.get("gpu_capability"):
        names.update(
            gpu_capability=info["gpu_capability"],
            gpu_driver=info.get("gpu_driver"),
            tf32=bool(info.get("tf32_matmul") or info.get("tf32_cudnn")),
        )
    return names


def fingerprint(device: torch.device, precision: str) -> dict[str, Any]:
    """The machine and software of a run: every key of :data:`DECIDING_KEYS` and a few for people (cores,
    Python, platform)."""
    import torch

    info: dict[str, Any] = {
        "precision": precision,
        "device": str(device),
        "device_name": _cpu_model() if device.type == "cpu" else str(device),
        "cpu": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the SIMD kernels torch picked (AVX512...)
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        **_library_versions(),
        # the same keys on every run; CUDA/cuDNN versions only where they were used (not the torch build's)
        "cuda": None,
        "cudnn": None,
        "gpu": None,
        "gpu_capability": None,
        "gpu_driver": None,
        "gpu_memory_gib": None,
        "gpu_count": 0,
        "tf32_matmul": None,
        "tf32_cudnn": None,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            device_name=props.name,
            gpu=props.name,
            gpu_capability=f"{props.major}.{props.minor}",
            gpu_driver=gpu_driver(),
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            gpu_count=torch.cuda.device_count(),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
            tf32_cudnn=torch.backends.cudnn.allow_tf32,
        )
    return info


def gpu_driver() -> str | None:
    """The NVIDIA driver's version ("580.159.04"), for people: the arithmetic is decided by the GPU, CUDA and
    cuDNN, which the fingerprint holds. None where it cannot be read (no /proc entry: not Linux, or not NVIDIA)."""
    version = r"(\d+(?:\.\d+)+)"
    try:
        found = re.search(r"Kernel Module\s+(?:for \S+\s+)?" + version, Path("/proc/driver/nvidia/version").read_text())
    except OSError:
        try:  # a container without the /proc entry still has the driver's tool, which prints the version alone
            query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
            found = re.match(r"\s*" + version, subprocess.run(query, capture_output=True, text=True, timeout=10).stdout)
        except (OSError, subprocess.SubprocessError):
            return None
    return found.group(1) if found else None
