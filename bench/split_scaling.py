"""Benchmark (not a test): how build_index() scales with the number of images.

Generates N small images (24x24 PNG colour fields) in an ImageFolder layout with 10 classes, about 1% of
them byte-identical copies and 1% near copies (+-2 noise) of other images, times build_index() for each N,
and times near_pairs() against a brute-force all-pairs Hamming computation on the same hashes.

    .venv/bin/python bench/split_scaling.py [--sizes 2500 5000 10000 20000] [--check-n 5000] [--repeat 2]

Takes about a minute on two cores.
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from handsigns.neardup import candidate_pairs, max_distance, near_pairs
from handsigns.params.data import DataParams
from handsigns.split import build_index, discover, read_images, readable

CLASSES = 10
SIZE = 24
DUP_RATE = 0.01
NEAR_RATE = 0.01


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def generate(root: Path, n: int, seed: int = 0) -> dict[str, int]:
    """``n`` files under ``root/class_k/``; returns how many copies of each kind were planted."""
    rng = np.random.default_rng(seed)
    n_dup, n_near = round(n * DUP_RATE), round(n * NEAR_RATE)
    n_orig = n - n_dup - n_near
    for k in range(CLASSES):
        (root / f"class_{k}").mkdir(parents=True, exist_ok=True)
    arrays: list[np.ndarray] = []
    paths: list[Path] = []
    for i in range(n_orig):
        grid = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)  # a random colour field, smooth at 2 px
        arr = np.asarray(Image.fromarray(grid).resize((SIZE, SIZE), Image.Resampling.BILINEAR))
        path = root / f"class_{i % CLASSES}" / f"img_{i:06d}.png"
        path.write_bytes(_png(arr))
        arrays.append(arr)
        paths.append(path)
    sources = rng.choice(n_orig, size=n_dup + n_near, replace=False)
    for j, src in enumerate(sources):
        cls_dir = paths[src].parent  # copies stay in their original's class
        if j < n_dup:
            shutil.copyfile(paths[src], cls_dir / f"dup_{j:06d}.png")
        else:
            noise = rng.integers(-2, 3, arrays[src].shape)
            near = np.clip(arrays[src].astype(np.int16) + noise, 0, 255).astype(np.uint8)
            (cls_dir / f"near_{j:06d}.png").write_bytes(_png(near))
    return {"exact": n_dup, "near": n_near}


def brute_force_pairs(hashes: np.ndarray, max_dist: int, block: int = 1024) -> list[tuple[int, int, int]]:
    """All pairs i < j within ``max_dist``, by computing every distance (bits as floats, one matmul a block)."""
    bits = np.unpackbits(hashes, axis=1).astype(np.float32)
    inv = 1.0 - bits
    out: list[tuple[int, int, int]] = []
    for start in range(0, len(bits), block):
        b = bits[start : start + block]
        dist = b @ inv.T + (1.0 - b) @ bits.T  # Hamming distance = ones where exactly one bit is set
        i, j = np.nonzero(dist <= max_dist)
        i = i + start
        keep = i < j
        out.extend(
            zip(i[keep].tolist(), j[keep].tolist(), dist[i[keep] - start, j[keep]].astype(int).tolist(), strict=True)
        )
    return sorted(out)


def hashes_of(raw: Path) -> np.ndarray:
    """The hashes near_pairs() sees inside build_index(): one per distinct file content, in path order."""
    items, _ = discover(raw)
    read_images(raw, items)
    firsts: dict[str, np.ndarray] = {}
    for im in readable(raw, items):
        firsts.setdefault(im.sha256, im.hash)
    return np.stack(list(firsts.values()))


def count_candidates(hashes: np.ndarray, max_dist: int) -> int:
    """How many distinct pairs near_pairs() compares: those sharing a bit chunk."""
    return len(candidate_pairs(np.unpackbits(hashes, axis=1), max_dist))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2500, 5000, 10000, 20000])
    ap.add_argument("--check-n", type=int, default=5000, help="N for the near_pairs vs brute force check")
    ap.add_argument("--repeat", type=int, default=2, help="time each N this many times and keep the best")
    args = ap.parse_args()
    params = DataParams(source="bench")
    max_dist = max_distance(params.near_duplicate_similarity)
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; {SIZE}x{SIZE} PNG, {CLASSES} classes, "
        f"~{DUP_RATE:.0%} exact and ~{NEAR_RATE:.0%} near copies planted; near = Hamming <= {max_dist} of 256"
    )

    with tempfile.TemporaryDirectory(prefix="handsigns-bench-") as tmp:
        warm = Path(tmp) / "warm"
        generate(warm, 200, seed=99)
        build_index(warm, params)  # imports, thread pool, first-call costs
        shutil.rmtree(warm)

        print(f"\nbest of {args.repeat} runs. index s: build_index() in all; near_pairs s: that function alone on")
        print("the same hashes; candidates: pairs sharing a hash chunk, which near_pairs compares (they grow")
        print("as N^2: src/handsigns/neardup.py's docstring has the figure this table measures)\n")

        print(
            f"{'N':>7} {'index s':>8} {'s/1000':>7} {'near_pairs s':>12} {'candidates':>11} "
            f"{'exact found':>12} {'near found':>11}"
        )
        timings: dict[int, float] = {}
        near_timings: dict[int, float] = {}
        for n in args.sizes:
            raw = Path(tmp) / f"n{n}"
            planted = generate(raw, n, seed=n)
            timings[n] = near_timings[n] = float("inf")
            for _ in range(args.repeat):  # best of: the machine may be busy with other work
                t0 = time.perf_counter()
                res = build_index(raw, params)
                timings[n] = min(timings[n], time.perf_counter() - t0)
            hashes = hashes_of(raw)
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                fast = near_pairs(hashes, max_dist)
                near_timings[n] = min(near_timings[n], time.perf_counter() - t0)
            pairs = res.metrics["duplicate_pairs"]
            print(
                f"{n:>7} {timings[n]:>8.2f} {timings[n] / n * 1000:>7.3f} {near_timings[n]:>12.2f} "
                f"{count_candidates(hashes, max_dist):>11,} {pairs['exact']:>5} of {planted['exact']:<4} "
                f"{pairs['near']:>4} of {planted['near']:<4}",
                flush=True,
            )
            if n == args.check_n:
                t0 = time.perf_counter()
                brute = brute_force_pairs(hashes, max_dist)
                brute_s = time.perf_counter() - t0
                check = (n, len(hashes), near_timings[n], fast, brute_s, brute)
            shutil.rmtree(raw)
        sizes = sorted(timings)
        print()
        for a, b in itertools.pairwise(sizes):
            print(
                f"t({b})/t({a}) = {timings[b] / timings[a]:.2f} for build_index, "
                f"{near_timings[b] / near_timings[a]:.2f} for near_pairs  (N ratio {b / a:g}: linear would be "
                f"{b / a:.2f})"
            )

        if args.check_n in timings:
            n, m, fast_s, fast, brute_s, brute = check
            same = fast == brute
            print(
                f"\nnear_pairs on the {m} distinct hashes of N={n}: multi-index {fast_s:.3f} s, brute force over "
                f"all {m * (m - 1) // 2:,} pairs {brute_s:.3f} s; {len(fast)} pairs, identical: {same}"
            )
            if not same:
                print(f"  only multi-index: {sorted(set(fast) - set(brute))[:10]}")
                print(f"  only brute force: {sorted(set(brute) - set(fast))[:10]}")
                sys.exit(1)


if __name__ == "__main__":
    main()
