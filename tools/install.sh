#!/usr/bin/env bash
# `make install`: .venv from requirements.txt, every package checked against the lock's sha256 hashes.
#   tools/install.sh PYTHON VENV LOCK TORCH_INDEX CPU_LOCK
# The installer is uv (seconds, and a second clone reuses its cache), itself installed by pip from the lock's
# hashed uv entry; where no uv wheel runs, pip installs everything from the same lock. Where torch comes from
# (the lock's CUDA build, or the CPU build CPU_LOCK pins): tools/torch_source.py. docs/install.md: the figures.
set -euo pipefail
python=$1 venv=$2 lock=$3 torch_index=$4 cpu_lock=$5
cd "$(dirname "$0")/.."  # the project's root: tools/ and the editable install are relative to it
bin=$venv/bin
oldest=3.10.12  # pyproject.toml's requires-python (tar extraction filters)

if ! "$python" -c "import sys; sys.exit(sys.version_info < (${oldest//./, }))" 2>/dev/null; then
    found=$("$python" -c 'import platform; print(platform.python_version())' 2>/dev/null || echo none)
    echo "make install: $python is Python $found; handsigns needs $oldest or newer: install one (python.org," \
        "pyenv, Homebrew's python@3.12) and run make PYTHON=python3.12" >&2
    exit 1
fi
[ -x "$bin/python" ] || "$python" -m venv "$venv"

# uv, pinned by the lock's hashes (a venv that has it from an earlier install keeps it: the lock lists uv).
if ! "$bin/uv" --version >/dev/null 2>&1; then
    awk '/^uv==/ {keep = 1; print; next} keep && /^ / {print; next} {keep = 0}' "$lock" >"$venv/uv.txt"
    "$bin/python" -m pip install --quiet --require-hashes --no-deps -r "$venv/uv.txt" ||
        echo "make install: uv does not install here; pip installs the lock instead (slower)" >&2
fi
if "$bin/uv" --version >/dev/null 2>&1; then
    export UV_PYTHON=$bin/python
    sync() { "$bin/uv" pip sync --quiet --require-hashes "$1"; }
    add() { "$bin/uv" pip install --quiet "$@"; }
    # the CPU lock from that index, first (--index), whatever default index the user's uv has
    add_from() { add --require-hashes --no-deps --index "$1" -r "$2"; }
else
    sync() { "$bin/python" -m pip install --quiet --require-hashes --no-deps -r "$1"; }
    add() { "$bin/python" -m pip install --quiet "$@"; }
    add_from() { add --require-hashes --no-deps --index-url "$1" -r "$2"; }
fi

index=$("$bin/python" tools/torch_source.py --index "$torch_index" --cpu-lock "$cpu_lock")
if [ -n "$index" ]; then  # torch's CPU build: the CPU lock's files, by hash, from that index; the rest, the lock's
    "$bin/python" tools/torch_source.py --without-torch "$lock" >"$venv/lock-without-torch.txt"
    sync "$venv/lock-without-torch.txt"
    add_from "$index" "$cpu_lock"
else
    sync "$lock"
fi
add --no-deps --no-build-isolation -e .
