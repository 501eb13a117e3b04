"""Fine-tuning from the SIGNS model onto "your own photos", against training them from scratch, side by side.

The photos are made from the SIGNS images the SIGNS model never trained on (its val and test splits, 329
images): grey, higher contrast and a random crop, as if taken by another camera. They are written as an
image folder (one folder per class, the same class names), and both runs index, split, train and evaluate
it with the default params; the fine-tuned one also sets `train.init_from` to the workspace's
`models/best.pt`.

    python bench/finetune.py                                # needs `make repro` (models/best.pt, data/index)
    python bench/finetune.py -S train.freeze_epochs=3       # overrides for the fine-tuned run

Runs in a temporary folder. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from common import ROOT, figures, project, run_stage
from PIL import Image, ImageOps


def make_photos(dest: Path) -> int:
    """SIGNS val + test images, changed as by another camera, as ``dest/<class>/<name>.png``; their number."""
    rng = np.random.default_rng(0)
    n = 0
    for split in ("val", "test"):
        for _, row in pd.read_csv(ROOT / "data/index" / f"{split}.csv", dtype=str).iterrows():
            img = ImageOps.autocontrast(Image.open(ROOT / "data/raw" / row["path"]).convert("L"), cutoff=2)
            side = img.size[0]
            crop = int(side * rng.uniform(0.75, 0.9))
            x, y = rng.integers(0, side - crop + 1, 2)
            img = img.crop((x, y, x + crop, y + crop)).resize((side, side), Image.Resampling.BILINEAR)
            (dest / row["class"]).mkdir(parents=True, exist_ok=True)
            img.convert("RGB").save(dest / row["class"] / f"{Path(row['path']).stem}.png")
            n += 1
    return n


def run(workdir: Path) -> dict:
    for stage in ("download", "split", "train", "evaluate"):
        run_stage(workdir, stage, threads=os.environ.get("OMP_NUM_THREADS", "2"))
    return {**figures(workdir), "images": json.loads((workdir / "metrics/data.json").read_text())["images"]["train"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-S", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    best = ROOT / "models/best.pt"
    if not best.exists() or not (ROOT / "data/index/val.csv").exists():
        raise SystemExit("error: models/best.pt or data/index not found; run `make repro` first")
    with tempfile.TemporaryDirectory(prefix="handsigns-finetune-") as tmp:
        photos = Path(tmp) / "photos"
        count = make_photos(photos)
        start = Path(tmp) / "signs.pt"
        shutil.copy(best, start)
        digest = hashlib.sha256(start.read_bytes()).hexdigest()
        tuned = [f"train.init_from={start}", f"train.init_from_sha256={digest}", *args.overrides]
        rows = {
            "from scratch": run(project(Path(tmp) / "scratch", source=photos)),
            f"from the SIGNS model ({' '.join(args.overrides) or 'default params'})": run(
                project(Path(tmp) / "tuned", tuned, source=photos)
            ),
        }
    print(f"{count} photos (SIGNS val + test, grey, contrast, random crop), split by the pipeline\n")
    print("| start | train images | epochs | best epoch | test accuracy | test errors | train s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['images']} | {r['epochs_run']} | {r['best_epoch']} | {r['test']['accuracy']:.4f} | "
            f"{r['test_errors']}/{r['test_images']} | {r['seconds']:.1f} |"
        )


if __name__ == "__main__":
    main()
