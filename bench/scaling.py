"""Scale-out figures, side by side in one run (`make bench-scaling`):

1. the streaming data path against the in-memory one on a generated image folder (default 50,000 JPEGs at
   128 px, 10 classes): one epoch of training batches (indexing or decoding, then the augmentation), in
   images/s, and the peak memory of the process with its DataLoader workers;
2. 1 against 2 training processes (torchrun, gloo) on the workspace's SIGNS: train seconds and test accuracy.

    python bench/scaling.py                       # both
    python bench/scaling.py --images 5000 --skip-processes

Needs `dvc repro split` for part 2. Writes to temporary folders only. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import psutil
from common import ROOT, figures, project, run_stage
from PIL import Image

CLASSES = 10


def _write_chunk(args: tuple[Path, int, int, int]) -> list[tuple[str, int, str]]:
    import hashlib

    root, start, stop, size = args
    rng = np.random.default_rng(start)
    rows = []
    for i in range(start, stop):
        label = i % CLASSES
        coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)  # a smooth random field: JPEG-sized like a photo
        img = Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC)
        rel = f"class_{label}/{i:06d}.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        img.save(root / rel, quality=90)
        rows.append((rel, label, hashlib.sha256((root / rel).read_bytes()).hexdigest()))
    return rows


def make_image_folder(root: Path, n: int, size: int) -> Path:
    """``n`` JPEGs in ``root/raw/class_k/`` and a train.csv index over them in ``root/index/``."""
    chunks = [(root / "raw", s, min(s + 2000, n), size) for s in range(0, n, 2000)]
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        rows = [r for chunk in pool.map(_write_chunk, chunks) for r in chunk]
    (root / "index").mkdir(parents=True, exist_ok=True)
    lines = ["path,label,class,sha256,width,height"]
    lines += [f"{p},{k},class_{k},{h},{size},{size}" for p, k, h in rows]
    (root / "index" / "train.csv").write_text("\n".join(lines) + "\n")
    return root


EPOCH = f"""
import json, sys, time
import torch
from pathlib import Path
from handsigns.augment import augment
from handsigns.dataset import load_split
from handsigns import adapt
from handsigns.params.recipe import RecipeParams
from handsigns.dataset import batch_bounds, batch_pixels

root, size, stream = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "stream"
classes = [f"class_{{k}}" for k in range({CLASSES})]
started = time.perf_counter()
split = load_split("train", size, classes, root / "index", root / "raw", stream=stream)
loaded = time.perf_counter() - started
order = torch.randperm(len(split), generator=torch.Generator().manual_seed(0))
batches = [order[s:e] for s, e in batch_bounds(len(order), 32)]
gen, seen, started = torch.Generator().manual_seed(0), 0, time.perf_counter()
for pixels in batch_pixels(split, batches, torch.device("cpu")):
    x = augment(pixels.float().div_(255.0), gen, adapt.at(RecipeParams(), 0.0)[0].train)  # SIGNS' strength
    seen += len(x)
epoch = time.perf_counter() - started
print(json.dumps({{"load_s": loaded, "epoch_s": epoch, "images": seen}}))
"""


def peak_memory_of(cmd: list[str]) -> tuple[dict, float]:
    """Run ``cmd``; its JSON result and the peak memory (GB) of it and all its children together: proportional
    set size, so pages the forked workers share with their parent count once."""
    proc = psutil.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    peak, done = 0, threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            try:
                tree = [proc, *proc.children(recursive=True)]
                peak = max(peak, sum(p.memory_full_info().pss for p in tree if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out = proc.stdout.read()
    code = proc.wait()
    done.set()
    sampler.join()
    if code:
        raise SystemExit(f"{' '.join(cmd[:3])} failed with exit {code}")
    return json.loads(out.strip().splitlines()[-1]), peak / 1e9


def data_paths(n: int, size: int) -> None:
    with tempfile.TemporaryDirectory(prefix="handsigns-stream-") as tmp:
        started = time.perf_counter()
        root = make_image_folder(Path(tmp), n, size)
        made = time.perf_counter() - started
        decoded = n * 3 * size * size / 1e9
        print(
            f"### Data paths: {n:,} generated JPEGs at {size} px ({decoded:.2f} GB decoded), one epoch of "
            f"batch 32 + augmentation, {os.cpu_count()} cores (generated in {made:.0f} s)\n"
        )
        print("| path | load s | epoch s | images/s (epoch) | peak memory GB (with workers) |")
        print("|---|---:|---:|---:|---:|")
        for mode in ("memory", "stream"):
            r, peak = peak_memory_of([sys.executable, "-c", EPOCH, str(root), str(size), mode])
            name = "in memory (decoded once)" if mode == "memory" else "streamed (DataLoader workers)"
            print(
                f"| {name} | {r['load_s']:.1f} | {r['epoch_s']:.1f} | {r['images'] / r['epoch_s']:,.0f} | {peak:.2f} |"
            )


def processes() -> None:
    if not (ROOT / "data/index/train.csv").exists():
        raise SystemExit("error: data/index not found; run `dvc repro split` first")
    cores = os.cpu_count() or 1
    print(
        f"\n### 1 against 2 training processes on SIGNS ({cores} cores shared out: OMP_NUM_THREADS = cores / "
        "processes)\n"
    )
    print("| processes | train s | best epoch | test accuracy | test errors |")
    print("|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="handsigns-procs-") as tmp:
        for nproc in (1, 2):
            workdir = project(Path(tmp) / f"nproc{nproc}", [f"nproc={nproc}"], data_from=ROOT)
            for stage in ("train", "evaluate"):
                run_stage(workdir, stage, threads=max(1, cores // nproc))
            r = figures(workdir)
            print(
                f"| {nproc} | {r['seconds']:.1f} | {r['best_epoch']} | {r['test']['accuracy']:.4f} | "
                f"{r['test_errors']}/{r['test_images']} |"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=50_000)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--skip-processes", action="store_true")
    args = ap.parse_args()
    data_paths(args.images, args.size)
    if not args.skip_processes:
        processes()


if __name__ == "__main__":
    main()
