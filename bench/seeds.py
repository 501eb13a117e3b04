"""Accuracy over seeds: train + evaluate the current params (plus overrides) once per seed, side by side.

    python bench/seeds.py                          # default params, seeds 0 1 2
    python bench/seeds.py --seeds 0 -S lr=0.001 -S model.batchnorm=false   # any dvc-exp-style override

Needs the data stages' outputs (data/raw, data/index: `dvc repro split`). Each seed runs in its own temporary
folder (params.yaml + links to data/), so the workspace is left untouched. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]


def parse_override(text: str) -> tuple[list[str], object]:
    key, _, value = text.partition("=")
    if not _:
        raise SystemExit(f"error: override {text!r} is not key=value")
    return key.split("."), yaml.safe_load(value)


def apply_overrides(params: dict, overrides: list[str]) -> dict:
    """``params`` with each ``key.sub=value`` override set (values parsed as YAML, as `dvc exp run -S`)."""
    for text in overrides:
        keys, value = parse_override(text)
        node = params
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return params


def make_workdir(workdir: Path, overrides: list[str]) -> Path:
    """A throwaway project in ``workdir``: params.yaml with ``overrides``, stages/, links to data/raw and
    data/index (the workspace is never touched)."""
    params = apply_overrides(yaml.safe_load((ROOT / "params.yaml").read_text()), overrides)
    (workdir / "data").mkdir(parents=True)
    for name in ("raw", "index"):
        os.symlink(ROOT / "data" / name, workdir / "data" / name)
    shutil.copytree(ROOT / "stages", workdir / "stages")
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return workdir


def run_stage(workdir: Path, stage: str) -> list[tuple[float, str]]:
    """Run ``stages/STAGE.py`` in ``workdir``; its output lines, each with the seconds since it started."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, f"stages/{stage}.py"],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = [(time.perf_counter() - started, line.rstrip("\n")) for line in proc.stdout]
    stderr = proc.stderr.read()
    if proc.wait():
        raise SystemExit(f"{workdir.name}: stage {stage} failed:\n{stderr[-2000:]}")
    return [*lines, (time.perf_counter() - started, "")]


def results(workdir: Path) -> dict:
    train = json.loads((workdir / "metrics/train.json").read_text())
    ev = json.loads((workdir / "metrics/eval.json").read_text())
    runtime = json.loads((workdir / "metrics/runtime.json").read_text())
    test = pd.read_csv(workdir / "metrics/eval/predictions_test.csv", dtype=str)
    return {
        **train,
        "val": ev["val"],
        "test": ev["test"],
        "ood": ev.get("ood"),  # the out-of-distribution check: test flagged, outliers caught (absent: ood.check off)
        "test_images": len(test),
        "test_errors": int((test["actual"] != test["predicted"]).sum()),
        "seconds": runtime["train_seconds"],
    }


def run_seed(seed: int, overrides: list[str], workdir: Path) -> dict:
    make_workdir(workdir, [*overrides, f"seed={seed}"])
    for stage in ("train", "evaluate"):
        run_stage(workdir, stage)
    return {"seed": seed, **results(workdir)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("-S", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("-j", "--jobs", type=int, default=1, help="seeds run in parallel (each on OMP_NUM_THREADS)")
    args = ap.parse_args()
    if not (ROOT / "data/index/train.csv").exists():
        raise SystemExit("error: data/index not found; run `dvc repro split` first")
    with tempfile.TemporaryDirectory(prefix="handsigns-seeds-") as tmp, ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda s: run_seed(s, args.overrides, Path(tmp) / f"seed{s}"), args.seeds))
    print(f"overrides: {' '.join(args.overrides) or '(none: params.yaml as committed)'}\n")
    print("| seed | best epoch | epochs run | val accuracy | test accuracy | test errors | test macro-F1 | train s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['seed']} | {r['best_epoch']} | {r['epochs_run']} | {r['val']['accuracy']:.4f} | "
            f"{r['test']['accuracy']:.4f} | {r['test_errors']}/{r['test_images']} | "
            f"{r['test']['macro_f1']:.4f} | {r['seconds']:.0f} |"
        )


if __name__ == "__main__":
    main()
