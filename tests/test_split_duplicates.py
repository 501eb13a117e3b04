"""build_index() on exact and near duplicates: copies within a split collapse to one, a train or val copy of a
test image is dropped (the test split is never changed), ``dedupe: report`` drops nothing, label conflicts."""

from __future__ import annotations

import shutil

import numpy as np

from handsigns.split import build_index

from conftest import encode, image_array
from helpers.raw_trees import cs230, imagefolder, put
from helpers.split_index import P, check, excluded, rows


def test_exact_duplicates_within_train_collapse_to_one(tmp_path):
    raw = cs230(tmp_path / "raw", {"train": 4, "val": 1, "test": 1}, labels="01")
    train = raw / "64x64_SIGNS" / "train_signs"
    original = sorted(train.glob("0_*.jpg"))[0]
    copies = [train / "0_IMG_9001.jpg", train / "0_IMG_9002 (1).jpg"]
    for c in copies:
        shutil.copy(original, c)
    res = build_index(raw, P())
    check(raw, res)
    rel = lambda p: p.relative_to(raw).as_posix()  # noqa: E731
    dropped = excluded(res, "duplicate")
    assert set(dropped) == {rel(c) for c in copies}
    assert all(d == f"copy of {rel(original)} in train" for d in dropped.values())
    assert rel(original) in rows(res, "train")
    assert res.metrics["within_split_duplicates"] == {"train": 2, "val": 0, "test": 0}
    assert res.metrics["duplicate_pairs"] == {"exact": 2, "near": 0}
    assert set(res.duplicates.kind) == {"exact"} and (res.duplicates.group == rel(original)).all()


def test_train_copy_of_a_test_image_is_dropped_and_test_keeps_all(tmp_path):
    raw = cs230(tmp_path / "raw", {"train": 4, "val": 2, "test": 2}, labels="012")
    base = raw / "64x64_SIGNS"
    test_img = sorted((base / "test_signs").glob("1_*.jpg"))[0]
    val_img = sorted((base / "val_signs").glob("2_*.jpg"))[0]
    shutil.copy(test_img, base / "train_signs" / "1_IMG_8000.jpg")
    shutil.copy(test_img, base / "val_signs" / "1_IMG_8001.jpg")
    shutil.copy(val_img, base / "train_signs" / "2_IMG_8002.jpg")
    res = build_index(raw, P())
    check(raw, res)
    assert len(res.tables["test"]) == 6  # the test split is never changed
    test_rel = test_img.relative_to(raw).as_posix()
    dropped = excluded(res, "duplicate")
    assert dropped == {
        # the train copy names the copy that survives (test), not the val copy that is dropped too
        "64x64_SIGNS/train_signs/1_IMG_8000.jpg": f"copy of {test_rel} in test",
        "64x64_SIGNS/val_signs/1_IMG_8001.jpg": f"copy of {test_rel} in test",
        "64x64_SIGNS/train_signs/2_IMG_8002.jpg": f"copy of {val_img.relative_to(raw).as_posix()} in val",
    }
    assert res.excluded.set_index("path").loc["64x64_SIGNS/train_signs/1_IMG_8000.jpg", "split"] == "train"
    assert res.metrics["cross_split_duplicates"] == {"test": 1, "test_exact": 1, "val": 2, "val_exact": 2}
    test_shas = set(res.tables["test"].sha256)
    assert not test_shas & set(res.tables["train"].sha256) and not test_shas & set(res.tables["val"].sha256)
    assert res.duplicates.cross_split.all() and len(res.duplicates) == 3


def test_near_duplicates_across_splits_are_found_and_dropped(tmp_path):
    raw = imagefolder(tmp_path / "raw", ["a", "b"], 6, "train")
    imagefolder(raw, ["a", "b"], 2, "val")
    imagefolder(raw, ["a", "b"], 2, "test")
    arr = image_array(424242, 64)
    put(raw, "test/a/photo.jpg", encode(arr, "JPEG", quality=95))
    put(raw, "train/a/photo_again.jpg", encode(arr, "JPEG", quality=80))  # re-encoded
    arr2 = image_array(777, 64)
    put(raw, "test/b/frame.png", encode(arr2))
    noisy = np.clip(arr2.astype(int) + np.random.default_rng(0).integers(-2, 3, arr2.shape), 0, 255)
    put(raw, "val/b/frame_noisy.png", encode(noisy.astype(np.uint8)))  # +-2 noise
    res = build_index(raw, P())
    check(raw, res)
    near = res.duplicates[res.duplicates.kind == "near"]
    assert {(r.path_a, r.path_b) for r in near.itertuples()} == {
        ("test/a/photo.jpg", "train/a/photo_again.jpg"),
        ("test/b/frame.png", "val/b/frame_noisy.png"),
    }
    assert (near.difference <= 0.03).all() and (near.difference > 0).all()
    assert near.joined.all() and near.cross_split.all()
    assert excluded(res, "duplicate") == {
        "train/a/photo_again.jpg": "copy of test/a/photo.jpg in test",
        "val/b/frame_noisy.png": "copy of test/b/frame.png in test",
    }
    assert res.metrics["cross_split_duplicates"] == {"test": 2, "test_exact": 0, "val": 0, "val_exact": 0}
    assert len(res.tables["test"]) == 6
    strict = build_index(raw, P(near_duplicate_max_difference=0.0))  # only identical thumbnails count now
    assert strict.metrics["duplicate_pairs"]["near"] < 2


def test_dedupe_report_drops_nothing(tmp_path):
    raw = imagefolder(tmp_path / "raw", ["a", "b"], 5, "train")
    imagefolder(raw, ["a", "b"], 2, "test")
    shutil.copy(raw / "test/a/a_000.png", raw / "train/a/leak.png")
    shutil.copy(raw / "train/b/b_000.png", raw / "train/b/twin.png")
    res = build_index(raw, P(dedupe="report"))
    check(raw, res)
    assert res.excluded.empty
    assert {"train/a/leak.png", "train/b/twin.png"} <= rows(res, "train")
    assert res.metrics["cross_split_duplicates"]["test"] == 1
    assert res.metrics["within_split_duplicates"]["train"] == 1
    assert res.metrics["excluded"]["duplicate"] == 0 and len(res.duplicates) == 2
    drop = build_index(raw, P(dedupe="drop"))
    assert drop.metrics["cross_split_duplicates"] == res.metrics["cross_split_duplicates"]
    assert set(excluded(drop, "duplicate")) == {"train/a/leak.png", "train/b/twin.png"}


def test_label_conflicts_are_counted(tmp_path):
    raw = imagefolder(tmp_path / "raw", ["a", "b"], 4)
    shutil.copy(raw / "a/a_000.png", raw / "b/looks_like_a.png")
    res = build_index(raw, P())
    check(raw, res)
    assert res.metrics["label_conflicts"] == 1
    assert not res.duplicates.same_class.any()
