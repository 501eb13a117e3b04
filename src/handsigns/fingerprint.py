"""What computed a run: the machine and software that ran it (``metrics/fingerprint.json``), the keys of that
fingerprint that decide a run's bytes, and the short names ``dvc exp show`` gives the machine.

torch is imported inside :func:`fingerprint`: ``handsigns gate`` and ``handsigns compare`` read
:data:`DECIDING_KEYS` without loading it."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# Libraries whose code shapes the outputs' bytes (decoding, curves, export) besides torch.
LIBRARIES = ("numpy", "pillow", "onnx", "onnxscript", "onnxruntime", "safetensors", "dvclive")
# The fingerprint keys that decide a run's floating-point result: the same values give the same bytes; other
# kernels, thread counts or library versions give other, equally valid, last bits (``handsigns gate``).
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
