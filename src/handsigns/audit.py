"""Which labels look wrong: `handsigns audit`, confident learning (cleanlab) on out-of-sample probabilities.

A photo filed under the wrong class lowers test accuracy quietly (in test) or teaches the model a mistake (in
train). To find such photos, every train and val image is scored by a model that never saw it: the pool is cut
into ``--folds`` stratified folds, and for each a model is trained with the project's recipe (params.yaml,
the ``auto`` knobs decided for the fold's size) on the other folds and scores the held-out one (it also picks
its best epoch on that fold: what selection sees, not what the weights learnt). Test images are scored by the
trained model (models/best.pt), which never saw them. cleanlab's ``find_label_issues`` then flags the images
whose given label the model doubts more than the class's own noise rate explains, and
``get_label_quality_scores`` ranks all of them (self-confidence: the probability of the given label).

Writes reports/audit/label_issues.csv (every image, most doubtful first: path, split, given, suggested, their
probabilities, the quality score, flagged) and reports/audit/label_issues.png (the first ``--top``, each
beside its occlusion map: where the trained model looks for its own answer). Not a DVC stage: `dvc repro`
never runs it (it trains ``--folds`` models); run it after `dvc repro`.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from handsigns.checkpoint import load_model, score
from handsigns.dataset import Split, join, load_splits, read_classes, take
from handsigns.errors import UserError
from handsigns.files import atomic_path
from handsigns.params import load
from handsigns.params.memory import MemoryParams
from handsigns.params.recipe import RecipeParams
from handsigns.paths import BEST, INDEX

OUT = Path("reports/audit")


def stratified_folds(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Each image's fold, 0 to k-1: every class dealt round-robin over the folds in a seeded random order, so
    each fold holds about 1/k of every class."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(labels), dtype=int)
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        fold[members] = np.arange(len(members)) % k
    return fold


def out_of_fold(recipe: RecipeParams, classes: list[str], pool: Split, k: int, say=print) -> np.ndarray:
    """N x classes probabilities of ``pool``'s images, each from the fold model that did not train on it."""
    from handsigns.train import fit

    labels = pool.labels.numpy()
    small = [classes[c] for c in range(len(classes)) if (labels == c).sum() < k]
    if small:
        raise UserError(f"class {small[0]!r} has fewer than {k} train+val images; audit with fewer --folds")
    fold = stratified_folds(labels, k, recipe.seed)
    probs = np.zeros((len(labels), len(classes)))
    with tempfile.TemporaryDirectory(prefix="handsigns-audit-") as tmp:
        for f in range(k):
            held, kept = np.flatnonzero(fold == f), np.flatnonzero(fold != f)
            started = time.perf_counter()
            scored = take(pool, held, "val")
            fit(recipe, classes, take(pool, kept, "train"), scored, best_path=Path(tmp) / "fold.pt")
            model, _ = load_model(Path(tmp) / "fold.pt")
            probs[held] = score(model, scored.images, recipe.evaluate.batch_size).exp().numpy()
            took = time.perf_counter() - started
            say(f"audit: fold {f + 1}/{k}: trained on {len(kept)}, scored {len(held)} ({took:.0f} s)")
    return probs


def rank(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(label quality per image, flagged per image): cleanlab's self-confidence score (lower: more doubtful)
    and its confident-learning verdict."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    quality = get_label_quality_scores(labels, probs, method="self_confidence")
    flagged = find_label_issues(labels, probs, filter_by="prune_by_noise_rate")
    return quality, flagged


def table(splits: list[Split], probs: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """Every image of ``splits`` (row-aligned with ``probs``), most doubtful label first."""
    labels = np.concatenate([s.labels.numpy() for s in splits])
    quality, flagged = rank(labels, probs)
    suggested = probs.argmax(1)
    rows = np.arange(len(labels))
    out = pd.DataFrame(
        {
            "path": [p for s in splits for p in s.paths],
            "split": [s.name for s in splits for _ in range(len(s))],
            "given": [classes[i] for i in labels],
            "suggested": [classes[i] for i in suggested],
            "given_probability": probs[rows, labels].round(6),
            "suggested_probability": probs[rows, suggested].round(6),
            "quality": np.round(quality, 6),
            "flagged": flagged,
        }
    )
    order = np.lexsort((rows, out["quality"].to_numpy()))  # ties: index order, so the file is the same every run
    return out.iloc[order].reset_index(drop=True)


def audit_gallery(ranked: pd.DataFrame, splits: list[Split], top: int, path: Path, model) -> None:
    """The first ``top`` rows as a gallery (given, suggested, the probability of the given label), each image
    beside where the trained model (models/best.pt) looks for its own answer."""
    from handsigns.evaluate import TorchScorer, gallery

    by_path = {(s.name, p): (s, i) for s in splits for i, p in enumerate(s.paths)}
    shown = ranked.head(top)
    images = torch.stack([split.images[i] for split, i in (by_path[(r.split, r.path)] for r in shown.itertuples())])
    view = pd.DataFrame(
        {"actual": shown["given"], "predicted": shown["suggested"], "probability": shown["given_probability"]}
    )
    title = f"the {len(shown)} most doubtful labels: given / suggested, p = probability of the given label"
    gallery(view, images, np.arange(len(shown)), path, title, scorer=TorchScorer(model, 256), caption=audit_caption)


def audit_caption(row) -> tuple[str, str]:
    return f"given {row['actual']} / {row['predicted']}?\np(given)={row['probability']:.2f}", "darkred"


def run(folds: int, top: int, out: Path = OUT) -> int:
    if folds < 2:
        raise UserError(f"--folds {folds}: cross-validation needs at least 2 folds")
    if not BEST.exists():
        raise UserError(f"{BEST} not found; run the pipeline first (dvc repro)")
    recipe = load(RecipeParams)
    recipe = dataclasses.replace(recipe, nproc=1, dist=dataclasses.replace(recipe.dist, nnodes=1))  # one process
    classes = read_classes()
    budget = load(MemoryParams).budget_gb
    train, val, test = load_splits(("train", "val", "test"), recipe.model.image_size, classes, budget, "audit")
    model, ckpt = load_model(BEST)  # checked before minutes of training, not after
    if ckpt["classes"] != classes:
        raise UserError(f"{INDEX}/classes.json differs from {BEST}'s classes; re-run the pipeline (dvc repro)")
    pool = join(train, val, "train+val")
    print(f"audit: {len(pool)} train+val images in {folds} folds, then {len(test)} test images by {BEST}")
    probs = out_of_fold(recipe, classes, pool, folds)
    test_probs = score(model, test.images, recipe.evaluate.batch_size).exp().numpy()
    splits = [train, val, test]  # pool is train then val: probs' rows in that order
    ranked = table(splits, np.concatenate([probs, test_probs]), classes)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "label_issues.csv") as tmp:
        ranked.to_csv(tmp, index=False, lineterminator="\n")
    audit_gallery(ranked, splits, top, out / "label_issues.png", model)
    flagged = ranked[ranked["flagged"]]
    print(f"audit: {len(flagged)} of {len(ranked)} labels flagged (confident learning); the most doubtful:")
    for r in ranked.head(min(top, 10)).itertuples():
        print(f"  {r.path} ({r.split}): given {r.given}, suggested {r.suggested} (p(given) {r.given_probability:.3f})")
    print(f"audit: {out / 'label_issues.csv'} (all, most doubtful first), {out / 'label_issues.png'} (the first {top})")
    return 0
