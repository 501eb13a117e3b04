"""Which out-of-distribution score to ship: the field's post-hoc detectors that need no outlier data, side by side
on one trained model, judged on handsigns.outliers' sets against the test images.

Each score is "higher = more unlike the training images"; each threshold lets through at most 5 % of val (as
ood.max_val_flagged does). Per detector: the share of test images flagged, then per set the AUROC against test
and the share caught at the threshold.

- msp: 1 - the softmax's maximum (Hendrycks & Gimpel, 2017), at temperature 1
- max_logit: minus the largest logit (Hendrycks et al., 2022)
- energy: minus the log-sum-exp of the logits (Liu et al., 2020)
- knn1, knn5: minus the cosine similarity of the normalised penultimate features to the k-th nearest training
  image's (Sun et al., 2022)
- mahalanobis: handsigns.ood's, the one the pipeline exports (Lee et al., 2018)

    python bench/ood_detectors.py                      # models/best.pt and data/index: the committed run
    python bench/ood_detectors.py --model other/best.pt --out /tmp/ood-detectors

Writes PREFIX.json and PREFIX.md (the table, also printed); PREFIX defaults to bench/results/ood-detectors.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from common import RESULTS, ROOT, write_results

from handsigns import ood, outliers
from handsigns.checkpoint import load_model
from handsigns.dataset import load_splits

MAX_FLAGGED = 0.05


def logits_of(model, features: np.ndarray) -> np.ndarray:
    """The head applied to the penultimate features: the logits (a linear head, as every classifier here has)."""
    with torch.no_grad():
        return ood.head_module(model)(torch.from_numpy(features).float()).double().numpy()


def log_sum_exp(z: np.ndarray) -> np.ndarray:
    top = z.max(1, keepdims=True)
    return (top + np.log(np.exp(z - top).sum(1, keepdims=True)))[:, 0]


def detectors(train: np.ndarray, labels: np.ndarray, classes: int, val: np.ndarray, model) -> dict:
    """name -> function(features) -> scores, higher = more unlike; fitted on ``train`` (and ``val``)."""
    unit = train / np.linalg.norm(train, axis=1, keepdims=True)

    def knn(k: int):
        def score(f: np.ndarray) -> np.ndarray:
            similar = (f / np.linalg.norm(f, axis=1, keepdims=True)) @ unit.T
            return -np.sort(similar, axis=1)[:, -k]

        return score

    maha = ood.fit(train, labels, classes, val, MAX_FLAGGED)
    return {
        "msp": lambda f: 1 - np.exp(-log_sum_exp(z := logits_of(model, f)) + z.max(1)),
        "max_logit": lambda f: -logits_of(model, f).max(1),
        "energy": lambda f: -log_sum_exp(logits_of(model, f)),
        "knn1": knn(1),
        "knn5": knn(5),
        "mahalanobis": maha.distances,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=ROOT / "models/best.pt")
    ap.add_argument("--out", type=Path, default=RESULTS / "ood-detectors", metavar="PREFIX")
    args = ap.parse_args()
    model, ckpt = load_model(args.model)
    size, classes = ckpt["model"]["image_size"], ckpt["classes"]
    train, val, test = load_splits(("train", "val", "test"), size, classes, 2.0, "bench")
    feats = {s.name: ood.features(model, s.images, 256) for s in (train, val, test)}
    sets = {
        name: ood.features(model, torch.from_numpy(px.transpose(0, 3, 1, 2).copy()), 256)
        for name, px in outliers.sets(size).items()
    }
    rows = {}
    for name, score in detectors(feats["train"], train.labels.numpy(), len(classes), feats["val"], model).items():
        cut = ood.threshold(score(feats["val"]), MAX_FLAGGED)
        inside = score(feats["test"])
        rows[name] = {
            "test_flagged": float(np.mean(inside > cut)),
            "sets": {
                s: {"auroc": ood.auroc(inside, score(f)), "caught": float(np.mean(score(f) > cut))}
                for s, f in sets.items()
            },
        }
    # what the model answers them: its calibrated top probability (the card's temperature, as predict applies it)
    temperature = json.loads(args.model.with_name("model.json").read_text())["calibration"]["temperature"]
    sure = {}
    for s, f in sets.items():
        z = logits_of(model, f) / temperature
        top = np.exp(z.max(1) - log_sum_exp(z))
        sure[s] = {"median": float(np.median(top)), "at_least_0.9": float(np.mean(top >= 0.9))}
    names = list(sets)
    lines = [
        "| detector | test flagged | " + " | ".join(f"{s}: AUROC, caught" for s in names) + " |",
        "|---|---:|" + "---:|" * len(names),
    ]
    for name, row in rows.items():
        cells = [f"{row['sets'][s]['auroc']:.3f}, {row['sets'][s]['caught']:.0%}" for s in names]
        lines.append(f"| {name} | {row['test_flagged']:.1%} | " + " | ".join(cells) + " |")
    where = f"{args.model.relative_to(ROOT) if args.model.is_relative_to(ROOT) else args.model}"
    date = time.strftime("%Y-%m-%d")
    model_is = f"{ckpt['model']['arch']}, {size} px, {len(classes)} classes"
    head = f"`python bench/ood_detectors.py` on {where} ({model_is}); {date}"
    answered = ", ".join(f"{s} {v['median']:.3f} ({v['at_least_0.9']:.0%})" for s, v in sure.items())
    lines += ["", f"The model's calibrated top probability on them, median (share at 0.9 or more): {answered}"]
    table = f"{head}\n\n" + "\n".join(lines) + "\n"
    print(table)
    report = {"model": where, "date": date, "max_val_flagged": MAX_FLAGGED, "detectors": rows, "answered": sure}
    write_results(args.out, report, table)


if __name__ == "__main__":
    main()
