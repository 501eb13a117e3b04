"""Accuracy over seeds: train + evaluate the current params (plus overrides) once per seed, side by side.

    python bench/seeds.py                          # default params, seeds 0 1 2
    python bench/seeds.py --seeds 0 -S lr=0.001 -S model.batchnorm=false   # any dvc-exp-style override

Needs the data stages' outputs (data/raw, data/index: `dvc repro split`). Each seed runs in its own temporary
folder (params.yaml + links to data/), so the workspace is left untouched. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import ROOT, figures, project, run_stage


def run_seed(seed: int, overrides: list[str], workdir: Path) -> dict:
    project(workdir, [*overrides, f"seed={seed}"], data_from=ROOT)
    for stage in ("train", "evaluate"):
        run_stage(workdir, stage)
    return {"seed": seed, **figures(workdir)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("-S", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("-j", "--jobs", type=int, default=1, help="seeds run in parallel (each on OMP_NUM_THREADS)")
    args = ap.parse_args()
    if not (ROOT / "data/index/train.csv").exists():
        raise SystemExit("error: data/index not found; run `dvc repro split` first")
    with tempfile.TemporaryDirectory(prefix="handsigns-seeds-") as tmp, ThreadPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(lambda s: run_seed(s, args.overrides, Path(tmp) / f"seed{s}"), args.seeds))
    print(f"overrides: {' '.join(args.overrides) or '(none: params.yaml as committed)'}\n")
    print("| seed | best epoch | epochs run | val accuracy | test accuracy | test errors | test macro-F1 | train s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        print(
            f"| {r['seed']} | {r['best_epoch']} | {r['epochs_run']} | {r['val']['accuracy']:.4f} | "
            f"{r['test']['accuracy']:.4f} | {r['test_errors']}/{r['test_images']} | "
            f"{r['test']['macro_f1']:.4f} | {r['seconds']:.0f} |"
        )


if __name__ == "__main__":
    main()
