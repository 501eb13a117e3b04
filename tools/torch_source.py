"""Where `make install` takes torch from: the lock (PyPI's build), or PyTorch's CPU wheel index.

On Linux, PyPI's torch is the CUDA build (about 6 GB in the venv with its NVIDIA libraries); a machine with no
NVIDIA GPU needs only the CPU build (about 1.5 GB), which PyTorch serves from its own index and
requirements-cpu.txt pins by hash (`make lock-cpu`). This script runs before the venv has anything in it
(standard library only) and decides:

    python tools/torch_source.py --index auto     # prints the index to take torch from, or nothing: the lock
    python tools/torch_source.py --without-torch requirements.txt   # the lock less torch and its CUDA wheels
    python tools/torch_source.py --probe URL      # exit status 0 when URL serves torch's project page

``--index``: ``auto`` (the CPU index on a Linux machine with no NVIDIA GPU, where that index answers), ``none``
(the lock's torch) or a URL (that index, a mirror of the CPU one). Either index needs the CPU lock
(``--cpu-lock``); without it, the lock's torch. One line on stderr says what was chosen and why.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
PROBE_TIMEOUT_S = 10
# The lock's packages that a torch from another index replaces: torch, torchvision and the CUDA stack they pull.
TORCH_PACKAGES = re.compile(r"^(torch|torchvision|triton|cuda-[a-z]+|nvidia-(cu|nc|nv)[a-z0-9-]*)==")


def nvidia_gpu() -> str | None:
    """The first NVIDIA GPU ``nvidia-smi -L`` lists, or None (no driver, no tool, or no GPU)."""
    tool = shutil.which("nvidia-smi")
    if tool is None:
        return None
    try:
        out = subprocess.run([tool, "-L"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    gpus = [line for line in out.stdout.splitlines() if line.startswith("GPU ")]
    return gpus[0] if out.returncode == 0 and gpus else None


def answers(index: str) -> str | None:
    """None when ``index`` serves torch's project page; else why not, in a few words."""
    try:
        with urllib.request.urlopen(f"{index.rstrip('/')}/torch/", timeout=PROBE_TIMEOUT_S) as response:
            return None if response.status == 200 else f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return str(getattr(exc, "reason", exc))


def choose(asked: str, cpu_index: str, system: str, gpu: str | None, probe, cpu_lock: str | None) -> tuple[str, str]:
    """(index, why): the index to take torch from ('' = the lock) and the line that says so. ``cpu_lock``: the
    CPU build's lock, None when there is none."""
    lock = "torch from requirements.txt"
    if asked == "none":
        return "", f"{lock} (TORCH_INDEX=none)"
    if asked != "auto":
        if cpu_lock is None:  # asked for outright: not silently something else
            raise SystemExit(
                f"make install: TORCH_INDEX={asked} takes torch's CPU build as requirements-cpu.txt pins it, and there "
                "is none: run make lock-cpu where that index answers, or make install TORCH_INDEX=auto"
            )
        return asked, f"torch from TORCH_INDEX={asked}, as {cpu_lock} pins it"
    if system != "Linux":
        return "", f"{lock}: on {system} PyPI's torch is already the CPU (or MPS) build"
    if gpu:
        return "", f"{lock}, the CUDA build: an NVIDIA GPU is present ({gpu})"
    if cpu_lock is None:
        return "", (
            f"no NVIDIA GPU, but no requirements-cpu.txt pins torch's CPU build (make lock-cpu writes it where "
            f"{cpu_index} answers): {lock}, the CUDA build"
        )
    problem = probe(cpu_index)
    if problem:
        return "", (
            f"no NVIDIA GPU, but PyTorch's CPU wheel index {cpu_index} does not answer ({problem}): {lock}, "
            "the CUDA build (about 6 GB, where the CPU build takes 1.5)"
        )
    return cpu_index, (
        f"no NVIDIA GPU: torch's CPU build from {cpu_index}, as {cpu_lock} pins it (TORCH_INDEX=none: the lock's "
        "CUDA build)"
    )


def without_torch(lock_text: str) -> str:
    """The lock less the entries (with their hash lines) that a torch from another index replaces."""
    out, skip = [], False
    for line in lock_text.splitlines(keepends=True):
        if line[:1] not in (" ", "#", "\n", ""):  # a requirement's first line; its hashes are indented
            skip = bool(TORCH_PACKAGES.match(line))
        if not skip:
            out.append(line)
    return "".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", default="auto", help="auto | none | an index URL")
    ap.add_argument("--cpu-index", default=CPU_INDEX, help="PyTorch's CPU wheel index (auto's choice)")
    ap.add_argument("--cpu-lock", default="requirements-cpu.txt", help="the CPU build's lock (make lock-cpu)")
    ap.add_argument("--without-torch", metavar="LOCK", help="print LOCK less torch and its CUDA wheels")
    ap.add_argument("--probe", metavar="URL", help="exit 0 when URL serves torch's project page, else 1")
    args = ap.parse_args()
    if args.probe:
        sys.exit(0 if answers(args.probe) is None else 1)
    if args.without_torch:
        with open(args.without_torch, encoding="utf-8") as f:
            sys.stdout.write(without_torch(f.read()))
        return
    cpu_lock = args.cpu_lock if os.path.isfile(args.cpu_lock) else None
    asked = args.index.strip() or "auto"
    index, why = choose(asked, args.cpu_index, platform.system(), nvidia_gpu(), answers, cpu_lock)
    print(f"make install: {why}", file=sys.stderr)
    print(index)


if __name__ == "__main__":
    main()
