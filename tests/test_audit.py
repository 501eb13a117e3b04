"""`handsigns audit` (handsigns.audit): stratified folds, out-of-sample probabilities and cleanlab's ranking
find labels flipped on purpose in a real project, and the command writes its CSV and gallery."""

import numpy as np
import pandas as pd
import pytest
import torch

from handsigns.audit import stratified_folds
from handsigns.dataset import Split, join, take

from conftest import TINY, colour_dataset, make_project, run, run_stage


def test_folds_deal_every_class_evenly_and_repeat_for_a_seed():
    labels = np.repeat([0, 1, 2], [10, 7, 23])
    fold = stratified_folds(labels, 5, seed=0)
    for c in (0, 1, 2):
        counts = np.bincount(fold[labels == c], minlength=5)
        assert counts.max() - counts.min() <= 1  # each class spread over all folds within one image
    assert (stratified_folds(labels, 5, seed=0) == fold).all()
    assert not (stratified_folds(labels, 5, seed=1) == fold).all()


def test_take_and_join_keep_images_labels_and_paths_together():
    def split(name, start, n):
        images = torch.arange(start, start + n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 2, 2)
        names = [f"{name}/{i}.png" for i in range(start, start + n)]
        return Split(name, images.clone(), torch.arange(start, start + n) % 3, names, [f"h{i}" for i in range(n)])

    pool = join(split("train", 0, 5), split("val", 5, 3), "pool")
    part = take(pool, np.array([6, 1]), "held")
    assert part.name == "held" and part.paths == ["val/6.png", "train/1.png"]
    assert part.images[:, 0, 0, 0].tolist() == [6, 1] and part.labels.tolist() == [0, 1]


@pytest.mark.slow
def test_audit_puts_flipped_labels_at_the_top_and_writes_its_report(tmp_path):
    colour_dataset(tmp_path / "photos", classes=3, per_class=30, size=20)
    recipe = {**TINY, "epochs": 8, "model": {**TINY["model"], "image_size": 20}}
    project = make_project(tmp_path / "project", {"source": "../photos"}, overrides=recipe)
    for stage in ("download", "split", "train"):
        run_stage(project, stage, check=True)
    index = project / "data/index/train.csv"
    train = pd.read_csv(index, dtype=str, keep_default_na=False)
    flipped = train.sample(4, random_state=0).index
    classes = sorted(train["class"].unique())
    train.loc[flipped, "class"] = [classes[(classes.index(c) + 1) % 3] for c in train.loc[flipped, "class"]]
    train.to_csv(index, index=False, lineterminator="\n")
    out = run(["handsigns", "audit", "--folds", "3", "--top", "6"], project)
    ranked = pd.read_csv(project / "reports/audit/label_issues.csv", dtype={"given": str, "suggested": str})
    sizes = sum(len(pd.read_csv(project / f"data/index/{s}.csv")) for s in ("train", "val", "test"))
    assert len(ranked) == sizes and ranked["quality"].is_monotonic_increasing
    top = set(ranked.head(len(flipped))["path"])
    assert top == set(train.loc[flipped, "path"]), ranked.head(8)
    assert ranked.head(len(flipped))["flagged"].sum() >= 3  # confident learning may spare one at its border
    assert (project / "reports/audit/label_issues.png").stat().st_size > 0
    assert "audit: fold 3/3" in out.stdout and "labels flagged" in out.stdout
