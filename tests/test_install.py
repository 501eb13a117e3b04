"""Where `make install` takes torch from (tools/torch_source.py): PyTorch's CPU index, as requirements-cpu.txt pins
it, on a Linux machine with no NVIDIA GPU where that index answers (a real HTTP server on 127.0.0.1 plays it),
else the lock, saying why; tools/install.sh, hash-checking every package on each path; `make lock-cpu`."""

import hashlib
import platform
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO
from helpers.servers import free_port, http_server

SCRIPT = REPO / "tools/torch_source.py"
pytestmark = pytest.mark.skipif(platform.system() != "Linux", reason="the CPU index is a Linux choice")


def choose(tmp_path: Path, *args: str, gpu: bool = False, cpu_lock: bool = True) -> tuple[str, str]:
    """Run the script as make does, with only a fake `nvidia-smi` (or none) and the shell's tools on PATH, and a
    CPU lock (or none)."""
    lock = tmp_path / "requirements-cpu.txt"
    if cpu_lock:
        lock.write_text("torch==2.14.1+cpu \\\n    --hash=sha256:" + "0" * 64 + "\n")
    args = (*args, "--cpu-lock", str(lock))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if gpu:
        fake = bin_dir / "nvidia-smi"
        fake.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-0000)'\n")
        fake.chmod(0o755)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
        timeout=60,
        check=True,
    )
    return proc.stdout.strip(), proc.stderr.strip()


def pypi_like_index(root: Path) -> Path:
    (root / "simple/torch").mkdir(parents=True)
    (root / "simple/torch/index.html").write_text("<a href='torch-2.14.1+cpu-cp311-cp311-linux_x86_64.whl'>torch</a>")
    return root


def test_no_gpu_and_the_cpu_index_answers_takes_the_cpu_build(tmp_path):
    with http_server(pypi_like_index(tmp_path / "served")) as base:
        index, why = choose(tmp_path, "--index", "auto", "--cpu-index", f"{base}/simple")
    assert index == f"{base}/simple"
    lock = tmp_path / "requirements-cpu.txt"
    assert why == (
        f"make install: no NVIDIA GPU: torch's CPU build from {index}, as {lock} pins it (TORCH_INDEX=none: the lock's "
        "CUDA build)"
    )


def test_no_cpu_lock_takes_the_locks_torch_and_says_what_writes_it(tmp_path):
    with http_server(pypi_like_index(tmp_path / "served")) as base:
        index, why = choose(tmp_path, "--cpu-index", f"{base}/simple", cpu_lock=False)
    assert index == ""
    assert why == (
        "make install: no NVIDIA GPU, but no requirements-cpu.txt pins torch's CPU build (make lock-cpu writes it "
        f"where {base}/simple answers): torch from requirements.txt, the CUDA build"
    )


def test_an_index_asked_for_without_a_cpu_lock_stops_in_one_line(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/whl"
    cmd = [sys.executable, str(SCRIPT), "--index", url, "--cpu-lock", str(tmp_path / "none.txt")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"make install: TORCH_INDEX={url} takes torch's CPU build as requirements-cpu.txt pins it, and there is none: "
        "run make lock-cpu where that index answers, or make install TORCH_INDEX=auto"
    ]


@pytest.mark.parametrize("served", [False, True], ids=["nothing listens", "no torch page"])
def test_no_gpu_and_no_cpu_index_falls_back_to_the_lock_in_one_line(tmp_path, served):
    if served:
        with http_server(tmp_path) as base:  # an index with no torch/ page: 404
            index, why = choose(tmp_path, "--cpu-index", f"{base}/simple")
        assert "(HTTP 404)" in why
    else:
        url = f"http://127.0.0.1:{free_port()}/simple"
        index, why = choose(tmp_path, "--cpu-index", url)
        assert "refused" in why.lower()
    assert index == ""
    assert len(why.splitlines()) == 1
    assert re.match(r"make install: no NVIDIA GPU, but PyTorch's CPU wheel index \S+ does not answer", why), why
    assert "torch from requirements.txt, the CUDA build" in why


def test_an_nvidia_gpu_keeps_the_locks_cuda_build(tmp_path):
    with http_server(pypi_like_index(tmp_path / "served")) as base:
        index, why = choose(tmp_path, "--cpu-index", f"{base}/simple", gpu=True)
    assert index == ""
    gpu = "GPU 0: NVIDIA H200 (UUID: GPU-0000)"
    assert why == f"make install: torch from requirements.txt, the CUDA build: an NVIDIA GPU is present ({gpu})"


def test_asked_explicitly_none_or_an_index_is_obeyed_without_probing(tmp_path):
    assert choose(tmp_path, "--index", "none") == ("", "make install: torch from requirements.txt (TORCH_INDEX=none)")
    url = f"http://127.0.0.1:{free_port()}/whl"  # nothing listens: an explicit index is not probed
    lock = tmp_path / "requirements-cpu.txt"
    assert choose(tmp_path, "--index", url) == (url, f"make install: torch from TORCH_INDEX={url}, as {lock} pins it")


def test_the_lock_less_torch_keeps_every_other_package_with_its_hashes(tmp_path):
    lock = (REPO / "requirements.txt").read_text()
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--without-torch", str(REPO / "requirements.txt")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    first_lines = re.compile(r"^([A-Za-z0-9][^= ]*)==", re.M)
    before, after = first_lines.findall(lock), first_lines.findall(out)
    dropped = sorted(set(before) - set(after))
    assert {"torch", "torchvision", "triton", "nvidia-cudnn-cu13", "cuda-toolkit"} <= set(dropped)
    assert all(re.match(r"(torch|torchvision|triton|cuda-|nvidia-(cu|nc|nv))", name) for name in dropped), dropped
    assert "nvidia-ml-py" in after  # not a CUDA wheel torch pulls: it stays
    # Each kept requirement with all of its lines (its hashes and its "via" comments), in order.
    blocks = re.split(r"(?m)^(?=[A-Za-z0-9])", lock)
    assert out == "".join(
        b for b in blocks if not re.match(r"(torch|torchvision|triton|cuda-[a-z]+|nvidia-(cu|nc|nv)[a-z0-9-]*)==", b)
    )


# ------------------------------------------------------------------------------------------- tools/install.sh

INSTALL = REPO / "tools/install.sh"


def install(
    tmp_path: Path, python: str, lock: Path, torch_index: str = "none", cpu_lock: Path | None = None, **env: str
) -> subprocess.CompletedProcess:
    """tools/install.sh as `make install` runs it, into ``tmp_path/venv``; by default the lock's torch (no probe)."""
    cpu_lock = cpu_lock or tmp_path / "no-cpu-lock.txt"
    return subprocess.run(
        [str(INSTALL), python, str(tmp_path / "venv"), str(lock), torch_index, str(cpu_lock)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **env},
        timeout=300,
        check=False,
    )


def test_a_python_older_than_the_project_supports_is_one_line_and_no_venv(tmp_path):
    old = tmp_path / "python3"  # stock macOS's python3 answers 3.9
    old.write_text('#!/bin/sh\ncase "$2" in *platform*) echo 3.9.6 ;; *) exit 1 ;; esac\n')
    old.chmod(0o755)
    proc = install(tmp_path, str(old), REPO / "requirements.txt")
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"make install: {old} is Python 3.9.6; handsigns needs 3.10.12 or newer: install one (python.org, pyenv, "
        "Homebrew's python@3.12) and run make PYTHON=python3.12"
    ]
    assert not (tmp_path / "venv").exists()


def tiny_wheel(index: Path, name: str = "tinypkg", version: str = "1.0") -> str:
    """A one-module wheel served as ``name`` from ``index/simple``; its sha256."""
    wheel = index / f"files/{name}-{version}-py3-none-any.whl"
    wheel.parent.mkdir(parents=True, exist_ok=True)
    info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(f"{name}/__init__.py", f"__version__ = {version!r}\n")
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", f"{name}/__init__.py,,\n{info}/METADATA,,\n{info}/WHEEL,,\n{info}/RECORD,,\n")
    (index / f"simple/{name}").mkdir(parents=True)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    # as PyTorch's index does: local versions' "+" escaped, each file's sha256 in its link
    href = f"../../files/{wheel.name}".replace("+", "%2B") + f"#sha256={digest}"
    (index / f"simple/{name}/index.html").write_text(f"<a href='{href}'>{wheel.name}</a>\n")
    return digest


def venv_with_uv(tmp_path: Path) -> Path:
    """An empty venv holding the project's uv (a venv that has uv: no bootstrap from PyPI)."""
    uv = REPO / ".venv/bin/uv"
    if not uv.exists():
        pytest.skip("needs the project's venv, with uv (make install)")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "venv")], check=True)
    (tmp_path / "venv/bin/uv").symlink_to(uv)
    return uv


@pytest.mark.parametrize("tampered", [False, True])
def test_every_package_is_checked_against_the_locks_hash(tmp_path, tampered):
    """The installer (uv, as `make install` runs it) takes a package from an index only when its bytes have the
    lock's sha256: a wheel that differs from the locked one is refused and nothing is installed."""
    digest = tiny_wheel(tmp_path / "index")
    if tampered:
        digest = hashlib.sha256(b"another wheel").hexdigest()
    lock = tmp_path / "requirements.txt"
    lock.write_text(f"tinypkg==1.0 \\\n    --hash=sha256:{digest}\n")
    venv_with_uv(tmp_path)
    with http_server(tmp_path / "index") as base:
        proc = install(tmp_path, sys.executable, lock, UV_DEFAULT_INDEX=f"{base}/simple", UV_NO_CONFIG="1")
    imported = subprocess.run([str(tmp_path / "venv/bin/python"), "-c", "import tinypkg"], check=False)
    if tampered:
        assert proc.returncode != 0
        assert "hash mismatch" in proc.stderr.lower(), proc.stderr
        assert imported.returncode != 0
    else:  # installed; the step after, the project's editable install, needs what this tiny lock lacks
        assert imported.returncode == 0, proc.stderr


@pytest.mark.parametrize("tampered", [False, True])
def test_make_lock_cpu_pins_the_cpu_build_and_install_takes_it_only_by_that_hash(tmp_path, tampered):
    """`make lock-cpu` compiles the CPU build's lock from a local index playing PyTorch's; tools/install.sh then
    takes torch from that index, by the lock's hash (the rest from the main lock, the lock's own torch dropped),
    and refuses a wheel that changed on the index since."""
    venv_with_uv(tmp_path)
    tiny = tiny_wheel(tmp_path / "pypi")
    torch_sha = tiny_wheel(tmp_path / "cpu", "torch", "2.14.1+cpu")
    tiny_wheel(tmp_path / "cpu", "torchvision", "0.29.1+cpu")
    pins = tmp_path / "torch-pins.txt"
    pins.write_text("torch==2.14.1\ntorchvision==0.29.1\n")
    lock = tmp_path / "requirements.txt"  # the CUDA torch's entry: never fetched on this path
    lock.write_text(f"tinypkg==1.0 \\\n    --hash=sha256:{tiny}\ntorch==2.14.1 \\\n    --hash=sha256:{'0' * 64}\n")
    cpu_lock = tmp_path / "requirements-cpu.txt"
    with http_server(tmp_path / "pypi") as pypi, http_server(tmp_path / "cpu") as cpu:
        make = ["make", "-C", str(REPO), "-o", ".venv/.installed", "lock-cpu", f"CPU_INDEX={cpu}/simple"]
        subprocess.run([*make, f"CPU_LOCK={cpu_lock}", f"TORCH_PINS={pins}"], check=True, capture_output=True)
        pinned = cpu_lock.read_text()
        assert f"torch==2.14.1+cpu \\\n    --hash=sha256:{torch_sha}" in pinned
        assert re.search(r"(?m)^torchvision==0\.29\.1\+cpu \\$", pinned) and "#    make lock-cpu\n" in pinned
        if tampered:  # the index serves other bytes under the same name
            wheel = next((tmp_path / "cpu/files").glob("torch-*.whl"))
            wheel.write_bytes(wheel.read_bytes() + b"\0")
        index = {"UV_DEFAULT_INDEX": f"{pypi}/simple", "UV_NO_CONFIG": "1"}
        proc = install(tmp_path, sys.executable, lock, f"{cpu}/simple", cpu_lock, **index)
    python = str(tmp_path / "venv/bin/python")
    found = subprocess.run([python, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True)
    assert f"torch from TORCH_INDEX={cpu}/simple, as {cpu_lock} pins it" in proc.stderr
    if tampered:
        assert proc.returncode != 0 and "hash mismatch" in proc.stderr.lower(), proc.stderr
        assert found.returncode != 0
    else:  # the project's editable install, after, needs what these tiny locks lack: only the imports count
        assert found.stdout.strip() == "2.14.1+cpu", proc.stderr
        assert subprocess.run([python, "-c", "import tinypkg"], check=False).returncode == 0
