"""build_index() carving the splits a data set lacks: stratified per class, seeded, copies kept on one side,
and never an empty side for a small class."""

from __future__ import annotations

import numpy as np
import pytest

from handsigns.errors import UserError
from handsigns.split import SPLITS, build_index

from conftest import encode, image_array
from helpers.raw_trees import imagefolder, img, on_disk, put, seed_of
from helpers.split_index import P, check, excluded, rows


def test_missing_val_is_carved_stratified_and_seeded(tmp_path):
    raw = tmp_path / "raw"
    counts = {"a": 10, "b": 15, "c": 20}
    for cls, n in counts.items():
        for k in range(n):
            img(raw, f"train/{cls}/{k}.png")
        for k in range(3):
            img(raw, f"test/{cls}/{k}.png")
    res = build_index(raw, P(split_seed=1))
    check(raw, res)
    assert rows(res, "test") == {p for p in on_disk(raw) if p.startswith("test/")}  # untouched
    assert res.metrics["per_class"]["val"] == {"a": 2, "b": 3, "c": 4}  # round(0.2 * n) per class
    assert res.metrics["per_class"]["train"] == {"a": 8, "b": 12, "c": 16}
    again = build_index(raw, P(split_seed=1))
    assert rows(again, "val") == rows(res, "val")
    other = build_index(raw, P(split_seed=2))
    assert rows(other, "val") != rows(res, "val")
    assert other.metrics["per_class"]["val"] == res.metrics["per_class"]["val"]
    half = build_index(raw, P(split_seed=1, val_fraction=0.5))
    assert half.metrics["per_class"]["val"] == {"a": 5, "b": 8, "c": 10}  # round half to even: 7.5 -> 8


def test_missing_val_and_test_are_both_carved(tmp_path):
    raw = imagefolder(tmp_path / "raw", ["x", "y", "z"], 20)
    res = build_index(raw, P(split_seed=7))
    check(raw, res)
    for cls in "xyz":  # test round(0.1 * 20) = 2, then val round(0.2 * 18) = 4
        assert {s: res.metrics["per_class"][s][cls] for s in SPLITS} == {"train": 14, "val": 4, "test": 2}
    same = build_index(raw, P(split_seed=7))
    assert all(rows(same, s) == rows(res, s) for s in SPLITS)
    other = build_index(raw, P(split_seed=8))
    assert rows(other, "test") != rows(res, "test") and rows(other, "val") != rows(res, "val")
    assert rows(other, "train") | rows(other, "val") | rows(other, "test") == set(on_disk(raw))


def test_carving_keeps_copies_together(tmp_path):
    raw = imagefolder(tmp_path / "raw", ["a", "b"], 30)
    for k in range(0, 30, 3):  # 10 exact copies and 10 near copies per class
        src = raw / "a" / f"a_{k:03d}.png"
        put(raw, f"a/copy_{k}.png", src.read_bytes())
        arr = image_array(seed_of(f"b/b_{k:03d}.png"), 40)
        put(raw, f"b/b_{k:03d}.png", encode(arr))
        noisy = np.clip(arr.astype(int) + np.random.default_rng(k).integers(-2, 3, arr.shape), 0, 255)
        put(raw, f"b/near_{k}.png", encode(noisy.astype(np.uint8)))
    for seed in (1, 2, 3):
        res = build_index(raw, P(split_seed=seed))
        check(raw, res)
        assert res.metrics["cross_split_duplicates"] == {"test": 0, "test_exact": 0, "val": 0, "val_exact": 0}
        assert res.metrics["duplicate_pairs"] == {"exact": 10, "near": 10}
        split_of = {p: s for s in SPLITS for p in res.tables[s].path} | dict(
            zip(res.excluded.path, res.excluded.split, strict=True)
        )
        pairs = [(f"a/a_{k:03d}.png", f"a/copy_{k}.png") for k in range(0, 30, 3)] + [
            (f"b/b_{k:03d}.png", f"b/near_{k}.png") for k in range(0, 30, 3)
        ]
        assert all(split_of[a] == split_of[b] for a, b in pairs)
        # the first path of a group is kept; a carved test split collapses its copies like train and val
        # (only a test split the data set came with is never changed)
        assert set(excluded(res, "duplicate")) == {b for _, b in pairs}
        assert res.metrics["within_split_duplicates"]["test"] == sum(split_of[a] == "test" for a, _ in pairs)
        dup = res.duplicates
        assert not dup.cross_split.any() and dup.same_class.all()


def test_class_without_training_images_is_an_error(tmp_path):
    raw = imagefolder(tmp_path / "raw", ["a", "b"], 4, "train")
    imagefolder(raw, ["a", "b", "c"], 2, "test")
    with pytest.raises(UserError, match="class 'c' has no training images"):
        build_index(raw, P())


@pytest.mark.parametrize(("n", "fraction", "split"), [(5, 0.1, "test"), (2, 0.2, "val"), (3, 0.5, "val")])
def test_small_classes_still_get_a_carved_image(tmp_path, n, fraction, split):
    raw = imagefolder(tmp_path / "raw", ["a", "b"], n, "train")
    if split == "val":
        imagefolder(raw, ["a", "b"], 2, "test")
    res = build_index(raw, P(test_fraction=fraction, val_fraction=fraction))
    check(raw, res)
    for cls in ("a", "b"):
        assert (res.tables[split]["class"] == cls).sum() >= 1  # half rounds up; never an empty side
        assert (res.tables["train"]["class"] == cls).sum() >= 1
