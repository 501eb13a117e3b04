"""Where and how a run computes (runtime.py): the precision `auto` picks, TF32 and seeding. CUDA devices are
stubbed at a compute capability: the rules are tested here, the real GPU by `make gpu-check`."""

import subprocess
import sys

import pytest
import torch

from handsigns.errors import UserError
from handsigns.fingerprint import fingerprint, machine_names
from handsigns.runtime import configure_math, resolve_precision

CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "expected"), [(True, False, "fp32"), (False, True, "bf16"), (True, True, "bf16")]
)
def test_auto_is_bf16_on_a_cpu_only_with_amx(monkeypatch, avx512_bf16, amx, expected):
    """AVX512-BF16 without AMX computes bf16, but slower than fp32 (docs/speed.md): auto keeps fp32 there."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert resolve_precision("auto", CPU) == expected
    assert resolve_precision("fp32", CPU) == "fp32"  # an explicit choice stands
    assert resolve_precision("bf16", CPU) == "bf16"


@pytest.mark.parametrize(
    ("capability", "expected"), [((7, 0), "fp32"), ((7, 5), "fp32"), ((8, 0), "bf16"), ((9, 0), "bf16")]
)
def test_auto_is_bf16_on_a_gpu_only_where_it_is_native(gpu, capability, expected):
    """A T4 (7.5) or V100 (7.0) emulates bf16, and torch.cuda.is_bf16_supported() still says yes (stubbed so
    here): auto must not believe it."""
    gpu(*capability)
    assert resolve_precision("auto", CUDA) == expected


def test_an_explicit_bf16_on_an_emulating_gpu_is_refused_in_one_line(gpu):
    gpu(7, 5, "Tesla T4")
    with pytest.raises(UserError, match=r"compute capability 7\.5\) only emulates it.*use fp16 or fp32"):
        resolve_precision("bf16", CUDA)
    assert resolve_precision("fp16", CUDA) == "fp16"


@pytest.mark.parametrize("tf32", [False, True])
def test_tf32_is_set_as_the_knob_says_and_recorded(gpu, tf32_state, tf32):
    gpu(8, 0, "NVIDIA A100-SXM4-80GB")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = not tf32
    configure_math(CUDA, tf32)
    info = fingerprint(CUDA, "fp32")
    assert (info["tf32_matmul"], info["tf32_cudnn"]) == (tf32, tf32)
    assert info["gpu_capability"] == "8.0" and info["gpu"] == "NVIDIA A100-SXM4-80GB"
    names = machine_names(info)
    assert names["tf32"] is tf32 and names["gpu_capability"] == "8.0"


def test_configure_math_leaves_the_cpu_alone(tf32_state):
    torch.backends.cudnn.allow_tf32 = True
    configure_math(CPU, False)
    assert torch.backends.cudnn.allow_tf32 is True
    info = fingerprint(CPU, "fp32")
    assert info["gpu_capability"] is info["tf32_matmul"] is info["tf32_cudnn"] is None


def test_seeding_the_cpu_turns_on_determinism_without_importing_inductor():
    """The deterministic switch is set in torch's core: torch.use_deterministic_algorithms would import Inductor
    (1.5 s of every train stage) only to set a flag that matters to torch.compile."""
    code = (
        "import sys, torch, torch.utils.deterministic\n"
        "from handsigns.runtime import seed_everything\n"
        "seed_everything(0, torch.device('cpu'), deterministic=False)\n"
        "print(torch.are_deterministic_algorithms_enabled(), torch.utils.deterministic.fill_uninitialized_memory,"
        " 'torch._inductor' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "False", "False"]
