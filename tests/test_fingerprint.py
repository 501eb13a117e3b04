"""What computed a run (fingerprint.py): the keys that tell machine classes apart, the short names of a machine,
the GPU driver. CUDA devices are stubbed (conftest's `gpu`); the real GPU is `make gpu-check`'s."""

import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from handsigns import fingerprint
from handsigns.fingerprint import DECIDING_KEYS, class_changes, machine_names

CUDA = torch.device("cuda", 0)


def test_tf32_and_the_capability_tell_two_fp32_gpu_runs_apart(gpu, tf32_state):
    """A V100 and an A100 with TF32 on are not the same arithmetic; the gate and `make exps` must see it."""
    for key in ("gpu_capability", "tf32_matmul", "tf32_cudnn"):
        assert key in DECIDING_KEYS
    torch.backends.cudnn.allow_tf32 = False
    gpu(7, 0, "Tesla V100")
    v100 = fingerprint.fingerprint(CUDA, "fp32")
    gpu(8, 0, "NVIDIA A100")
    torch.backends.cudnn.allow_tf32 = True
    a100 = fingerprint.fingerprint(CUDA, "fp32")
    assert {"gpu", "gpu_capability", "tf32_cudnn"} <= set(class_changes(v100, a100))
    assert class_changes(a100, dict(a100, gpu_driver="999.1")) == []  # the driver is for people


@pytest.mark.parametrize(
    ("device", "name", "short"),
    [
        ("cpu", "Intel(R) Xeon(R) Platinum 8480C", "Intel Xeon Platinum 8480C"),
        ("cpu", "AMD EPYC 7B13 64-Core Processor", "AMD EPYC 7B13"),
        ("cpu", "Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz", "Intel Core i7-8650U"),
        ("cuda:1", "NVIDIA H200", "NVIDIA H200"),
    ],
)
def test_the_machine_is_named_in_three_short_strings(device, name, short):
    names = machine_names({"device": device, "device_name": name, "precision": "bf16", "torch": "2.14.1"})
    assert names == {"device": device.split(":")[0], "device_name": short, "precision": "bf16"}


@pytest.mark.skipif(
    fingerprint.Path("/proc/driver/nvidia/version").exists(), reason="a real NVIDIA driver answers first"
)
def test_the_driver_is_read_from_nvidia_smi_where_proc_has_no_entry(monkeypatch):
    answer = SimpleNamespace(stdout="580.159.04\n")
    monkeypatch.setattr(fingerprint.subprocess, "run", lambda *a, **k: answer)
    assert fingerprint.gpu_driver() == "580.159.04"

    def missing(*a, **k):
        raise FileNotFoundError("nvidia-smi")

    monkeypatch.setattr(fingerprint.subprocess, "run", missing)
    assert fingerprint.gpu_driver() is None  # no driver: None, not a crash


def test_the_gate_and_compare_read_the_deciding_keys_without_loading_torch():
    """`handsigns gate` and `handsigns compare` run where only the CI tools are quick to import."""
    code = "import sys, handsigns.gate, handsigns.compare; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False"]
