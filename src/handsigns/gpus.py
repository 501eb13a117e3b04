"""One GPU per run on a shared machine: an advisory lock file per GPU. No torch here, so a process that only
claims a GPU starts in milliseconds."""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path


def claim_gpu(count: int, lock_dir: Path | None = None) -> int:
    """The index of a GPU no other run on this machine holds, held until this process exits (an advisory lock
    file per GPU; the kernel releases it however the process ends). ``dvc queue start -j N`` runs N experiments
    at once in one environment: without this, all N would land on ``cuda:0``. When every GPU is held, wait for
    one (chosen by process id, so waiting runs spread)."""
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
