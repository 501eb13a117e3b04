"""The label audit on SIGNS with labels flipped on purpose: how many of them `handsigns audit` puts first.

In a throwaway project on the shipped zip: download, split and train as `dvc repro` does, then `handsigns audit`
on the index as it is (what it finds on the unmodified SIGNS), then again with FRACTION of the train images
given another class at random (seeded). For N flipped: how many of them the top N of the ranking holds
(recall at N, which is also the precision there), how many confident learning flags, and the seconds.

    python bench/audit.py                       # 5 % flipped, 5 folds (about 10 minutes on 2 cores)
    python bench/audit.py --fraction 0.1 --folds 3

Writes bench/results/audit.{json,md} (--out PREFIX: PREFIX.{json,md}).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from common import RESULTS, SIGNS_ZIP, project, run_stage, write_results


def audit(workdir: Path, folds: int, out: str) -> tuple[pd.DataFrame, float]:
    started = time.perf_counter()
    cmd = [sys.executable, "-m", "handsigns.cli", "audit", "--folds", str(folds), "--out", out]
    subprocess.run(cmd, cwd=workdir, check=True)
    return pd.read_csv(
        workdir / out / "label_issues.csv", dtype=str, keep_default_na=False
    ), time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fraction", type=float, default=0.05, help="of the train images to flip (default: 0.05)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0, help="which images flip, and to what")
    ap.add_argument("--out", type=Path, default=RESULTS / "audit", metavar="PREFIX")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="handsigns-audit-bench-") as tmp:
        wd = project(Path(tmp), source=SIGNS_ZIP)
        for stage in ("download", "split", "train"):
            run_stage(wd, stage, threads=2)
        clean, clean_s = audit(wd, args.folds, "reports/clean")
        index = wd / "data/index/train.csv"
        train = pd.read_csv(index, dtype=str, keep_default_na=False)
        rng = np.random.default_rng(args.seed)
        flip = np.sort(rng.choice(len(train), round(args.fraction * len(train)), replace=False))
        classes = sorted(train["class"].unique())
        for i in flip:  # another class, uniformly
            others = [c for c in classes if c != train.at[i, "class"]]
            train.at[i, "class"] = others[rng.integers(len(others))]
        train.to_csv(index, index=False, lineterminator="\n")
        noisy, noisy_s = audit(wd, args.folds, "reports/flipped")
    flipped = set(train.loc[flip, "path"])
    n = len(flipped)
    found = len(flipped & set(noisy.head(n)["path"]))
    flagged = noisy[noisy["flagged"] == "True"]
    report = {
        "fraction": args.fraction,
        "folds": args.folds,
        "seed": args.seed,
        "train_images": len(train),
        "flipped": n,
        "top_n_holds": found,
        "recall_at_n": round(found / n, 4),
        "flagged": len(flagged),
        "flagged_flipped": len(flipped & set(flagged["path"])),
        "seconds": round(noisy_s, 1),
        "clean": {
            "flagged": int((clean["flagged"] == "True").sum()),
            "seconds": round(clean_s, 1),
            "top": clean.head(10)[["path", "split", "given", "suggested", "given_probability"]].to_dict("records"),
        },
    }
    top = "\n".join(
        f"| {r['path']} | {r['split']} | {r['given']} | {r['suggested']} | {float(r['given_probability']):.3f} |"
        for r in report["clean"]["top"]
    )
    md = (
        f"# The label audit on SIGNS\n\n`{' '.join(['python', 'bench/audit.py', *sys.argv[1:]])}`\n\n"
        f"{n} of {len(train)} train labels flipped ({args.fraction:.0%}, seed {args.seed}), {args.folds} folds: the "
        f"top {n} of the ranking holds **{found}** of them (recall and precision at N: {found / n:.2f}); "
        f"confident learning flags {len(flagged)}, {report['flagged_flipped']} of them flipped. "
        f"{noisy_s:.0f} s.\n\nThe unmodified SIGNS: {report['clean']['flagged']} flagged ({clean_s:.0f} s); "
        f"the ten most doubtful:\n\n| path | split | given | suggested | p(given) |\n|---|---|---|---|---:|\n{top}\n"
    )
    write_results(args.out, report, md)
    print(md)


if __name__ == "__main__":
    main()
