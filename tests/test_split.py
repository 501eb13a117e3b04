"""build_index() / write_index() on generated data sets in every layout, with duplicates, leaks and bad files."""

from __future__ import annotations

import hashlib
import json
import shutil
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from handsigns.errors import UserError
from handsigns.params.data import DataParams
from handsigns.split import INDEX_COLUMNS, SPLITS, build_index, write_index

from conftest import assert_user_error_exit, encode, image_array, run_stage, write_image

LABELS = "012345"


def P(**kw) -> DataParams:
    return DataParams(source="x", **kw)


def seed_of(name: str) -> int:
    return zlib.crc32(name.encode())


def img(raw: Path, rel: str, seed: int | None = None, **kw) -> Path:
    """A generated image at ``raw/rel``; its content depends only on ``seed`` (default: on ``rel``)."""
    return write_image(raw / rel, seed_of(rel) if seed is None else seed, **kw)


def put(raw: Path, rel: str, data: bytes) -> Path:
    path = raw / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def cs230(raw: Path, counts: dict[str, int], labels: str = LABELS, wrapper: str = "64x64_SIGNS") -> Path:
    """``{split}_signs/{label}_IMG_{n}.jpg`` (every third name with a space, as in the real data)."""
    base = raw / wrapper if wrapper else raw
    n = 5000
    for split, per_class in counts.items():
        for label in labels:
            for _ in range(per_class):
                n += 1
                name = f"{label}_IMG_{n} (1).jpg" if n % 3 == 0 else f"{label}_IMG_{n}.jpg"
                write_image(base / f"{split}_signs" / name, seed_of(f"{split}/{name}"), 64)
    return raw


def imagefolder(raw: Path, classes: list[str], per_class: int, split: str | None = None) -> Path:
    prefix = f"{split}/" if split else ""
    for cls in classes:
        for k in range(per_class):
            img(raw, f"{prefix}{cls}/{cls}_{k:03d}.png")
    return raw


def on_disk(raw: Path) -> list[str]:
    return sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*") if p.is_file())


def check(raw: Path, res) -> None:
    """The invariants of every index: each file under raw is listed exactly once in train, val, test or
    excluded, and the table columns are right."""
    listed = [*res.tables["train"].path, *res.tables["val"].path, *res.tables["test"].path, *res.excluded.path]
    assert sorted(listed) == on_disk(raw)
    assert res.metrics["files_scanned"] == len(listed)
    assert sum(res.metrics["excluded"].values()) == len(res.excluded)
    for split in SPLITS:
        df = res.tables[split]
        assert list(df.columns) == INDEX_COLUMNS
        assert res.metrics["images"][split] == len(df)
        for row in df.itertuples():
            assert res.classes[row.label] == row._3  # "class"
            assert row.sha256 == hashlib.sha256((raw / row.path).read_bytes()).hexdigest()
            assert row.width > 0 and row.height > 0


def rows(res, split: str) -> set[str]:
    return set(res.tables[split].path)


def excluded(res, reason: str | None = None) -> dict[str, str]:
    df = res.excluded if reason is None else res.excluded[res.excluded.reason == reason]
    return dict(zip(df.path, df.detail, strict=True))


# -------------------------------------------------------------------------------------------- layouts


def test_cs230_layout(tmp_path):
    raw = cs230(tmp_path / "raw", {"train": 5, "val": 2, "test": 2})
    res = build_index(raw, P())
    check(raw, res)
    assert res.layout == "filename-labels" and res.metrics["layout"] == "filename-labels"
    assert res.classes == list(LABELS)
    assert res.metrics["images"] == {"train": 30, "val": 12, "test": 12}
    assert res.metrics["per_class"]["test"] == dict.fromkeys(LABELS, 2)
    for split in SPLITS:
        df = res.tables[split]
        assert all(p.startswith(f"64x64_SIGNS/{split}_signs/") for p in df.path)
        assert (df.label == df["class"].astype(int)).all()
        assert (df.width == 64).all() and (df.height == 64).all()
    assert any(" (1).jpg" in p for p in res.tables["train"].path)  # names with spaces are fine
    assert res.excluded.empty and res.duplicates.empty
    assert res.metrics["cross_split_duplicates"] == {"test": 0, "test_exact": 0, "val": 0, "val_exact": 0}


def test_cs230_dev_folder_is_val_and_no_wrapper_needed(tmp_path):
    raw = cs230(tmp_path / "raw", {"train": 3, "dev": 1, "test": 1}, labels="abc", wrapper="")
    res = build_index(raw, P())
    check(raw, res)
    assert res.classes == ["a", "b", "c"] and res.metrics["images"] == {"train": 9, "val": 3, "test": 3}


def test_imagefolder_without_splits_many_classes_formats_and_modes(tmp_path):
    raw = tmp_path / "raw"
    classes = ["ant", "bee", "cat", "dog", "eel", "fox", "gnu", "hen"]  # more than 6
    kinds = [
        (".jpg", "RGB"),
        (".png", "RGBA"),
        (".bmp", "RGB"),
        (".webp", "RGB"),
        (".jpeg", "L"),
        (".png", "L"),
        (".png", "P"),
        (".JPG", "RGB"),
        (".webp", "RGBA"),
        (".png", "RGB"),
    ]
    sizes = {}
    for c, cls in enumerate(classes):
        for k, (ext, mode) in enumerate(kinds):
            size = (16 + (3 * k + c) % 25, 16 + (5 * k + 2 * c) % 25)  # not square, 16..40
            sub = "nested/" if k == 9 else ""
            path = img(raw, f"data/{cls}/{sub}{cls}{k}{ext}", mode=mode, size=size)
            sizes[path.relative_to(raw).as_posix()] = size
    put(raw, "data/ant/notes.txt", b"not an image")
    res = build_index(raw, P())
    check(raw, res)
    assert res.layout == "imagefolder" and res.classes == classes
    assert excluded(res) == {"data/ant/notes.txt": "extension is not one of .jpg .jpeg .png .bmp .webp"}
    for split in SPLITS:  # stratified: test round(0.1 * 10) = 1, val round(0.2 * 9) = 2 per class
        want = {"train": 7, "val": 2, "test": 1}[split]
        assert res.metrics["per_class"][split] == dict.fromkeys(classes, want)
        for row in res.tables[split].itertuples():
            assert (row.width, row.height) == sizes[row.path]
    assert res.metrics["classes_missing_from_a_split"] == 0
    assert res.duplicates.empty  # different seeds are never near-duplicates


def test_imagefolder_with_split_folders(tmp_path):
    raw = tmp_path / "raw"
    classes = [f"class_{i:02d}" for i in range(7)]
    for folder, n in (("Training", 4), ("valid", 2), ("test", 2)):
        imagefolder(raw, classes, n, f"ds/{folder}")
    img(raw, "ds/Training/class_00/deeper/still/x.png")
    res = build_index(raw, P())
    check(raw, res)
    assert res.layout == "imagefolder-splits" and res.classes == classes
    for split, folder in (("train", "Training"), ("val", "valid"), ("test", "test")):
        assert {p.split("/")[1] for p in res.tables[split].path} == {folder}
        assert all(row.path.split("/")[2] == row._3 for row in res.tables[split].itertuples())
    assert res.metrics["images"] == {"train": 29, "val": 14, "test": 14}


def test_files_outside_the_layout_are_listed(tmp_path):
    raw = imagefolder(tmp_path / "raw", ["a", "b"], 5, "train")
    imagefolder(raw, ["a", "b"], 2, "test")
    img(raw, "stray.png")
    img(raw, "misc/other.png")  # not a split folder
    res = build_index(raw, P())
    check(raw, res)
    assert set(excluded(res, "outside_layout")) == {"stray.png", "misc/other.png"}


def test_stray_file_next_to_the_wrapping_folder_does_not_change_the_layout(tmp_path):
    raw = cs230(tmp_path / "raw", {"train": 3, "val": 1, "test": 1}, labels="01")
    put(raw, "README.txt", b"SIGNS, CS230\n")
    res = build_index(raw, P())
    check(raw, res)
    assert res.layout == "filename-labels" and res.classes == ["0", "1"]
    assert excluded(res) == {"README.txt": "not inside a split or class folder"}


# ------------------------------------------------------------------------------------------- carving


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


# ---------------------------------------------------------------------------------------- duplicates


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


# -------------------------------------------------------------------------------------------- bad files


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("train/a/broken.jpg", np.random.default_rng(5).bytes(3000)),
        ("train/a/empty.png", b""),
        ("train/a/truncated.jpg", None),
    ],
)
def test_unreadable_image(tmp_path, name, data):
    raw = imagefolder(tmp_path / "raw", ["a", "b"], 5, "train")
    imagefolder(raw, ["a", "b"], 2, "test")
    if data is None:
        data = encode(image_array(3, 40, kind="noise"), "JPEG", quality=95)
        data = data[: len(data) // 2]
    put(raw, name, data)
    with pytest.raises(UserError) as info:
        build_index(raw, P())
    assert name in str(info.value) and "not a readable image" in str(info.value)
    assert "on_bad_file: skip" in str(info.value)
    res = build_index(raw, P(on_bad_file="skip"))
    check(raw, res)
    assert set(excluded(res, "unreadable")) == {name}
    assert res.metrics["excluded"]["unreadable"] == 1


def test_bad_file_name_in_the_cs230_layout(tmp_path):
    raw = cs230(tmp_path / "raw", {"train": 3, "val": 1, "test": 1}, labels="01")
    bad = img(raw, "64x64_SIGNS/train_signs/IMG_1.jpg", size=64).relative_to(raw).as_posix()
    with pytest.raises(UserError) as info:
        build_index(raw, P())
    assert bad in str(info.value) and "no valid label" in str(info.value)
    img(raw, "64x64_SIGNS/val_signs/_IMG_2.jpg", size=64)
    with pytest.raises(UserError, match=r"IMG_1\.jpg has no valid label.*\(and 1 more\)"):
        build_index(raw, P())
    res = build_index(raw, P(on_bad_file="skip"))
    check(raw, res)
    assert set(excluded(res, "bad_label")) == {bad, "64x64_SIGNS/val_signs/_IMG_2.jpg"}


def test_non_image_files_in_the_cs230_layout_are_not_errors(tmp_path):
    raw = cs230(tmp_path / "raw", {"train": 3, "val": 1, "test": 1}, labels="01")
    put(raw, "64x64_SIGNS/train_signs/notes.txt", b"taken with an iPhone\n")
    put(raw, "64x64_SIGNS/test_signs/0_IMG_1.jpg.bak", b"old")
    res = build_index(raw, P())  # on_bad_file: error, yet nothing here is a bad image
    check(raw, res)
    assert set(excluded(res, "not_an_image")) == {
        "64x64_SIGNS/train_signs/notes.txt",
        "64x64_SIGNS/test_signs/0_IMG_1.jpg.bak",
    }


def test_missing_or_empty_raw(tmp_path):
    with pytest.raises(UserError, match="does not exist; run the download stage"):
        build_index(tmp_path / "nope", P())
    put(tmp_path / "raw", "train/a/readme.txt", b"x")
    with pytest.raises(UserError, match="no images found"):
        build_index(tmp_path / "raw", P())


# ------------------------------------------------------------------------------------------ writing


def test_write_index(tmp_path):
    raw = cs230(tmp_path / "raw", {"train": 3, "test": 2}, labels="012")
    put(raw, "64x64_SIGNS/train_signs/0_IMG_bad.jpg", b"junk")
    shutil.copy(next((raw / "64x64_SIGNS/test_signs").glob("2_*")), raw / "64x64_SIGNS/train_signs/2_IMG_x.jpg")
    res = build_index(raw, P(on_bad_file="skip"))
    check(raw, res)
    out, metrics = tmp_path / "data" / "index", tmp_path / "metrics" / "data.json"
    details = tmp_path / "metrics" / "data" / "split.json"
    out.mkdir(parents=True)
    (out / "stale.csv").write_text("old")
    write_index(res, out, metrics, details)
    assert sorted(p.name for p in out.iterdir()) == [
        "classes.json",
        "duplicates.csv",
        "excluded.csv",
        "test.csv",
        "train.csv",
        "val.csv",
    ]
    for split in SPLITS:
        df = pd.read_csv(out / f"{split}.csv", dtype={"class": str})
        assert list(df.columns) == ["path", "label", "class", "sha256", "width", "height"]
        pd.testing.assert_frame_equal(df, res.tables[split], check_dtype=False)
    assert json.loads((out / "classes.json").read_text()) == {"classes": ["0", "1", "2"], "layout": "filename-labels"}
    assert json.loads(details.read_text()) == res.metrics
    # The headline DVC shows: a handful of numbers, every one of them also in the details.
    assert json.loads(metrics.read_text()) == {"classes": 3, "images": res.metrics["images"], "excluded": 2}
    ex = pd.read_csv(out / "excluded.csv")
    assert list(ex.columns) == ["path", "split", "reason", "detail"]
    assert dict(zip(ex.path, ex.reason, strict=True)) == {
        "64x64_SIGNS/train_signs/0_IMG_bad.jpg": "unreadable",
        "64x64_SIGNS/train_signs/2_IMG_x.jpg": "duplicate",
    }
    assert len(pd.read_csv(out / "duplicates.csv")) == 1
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    write_index(build_index(raw, P(on_bad_file="skip")), out, metrics, details)  # identical inputs, identical bytes
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first


# ------------------------------------------------------------------------------------- the split stage


def test_split_stage_is_reproducible_across_hash_seeds(stage_project):
    project = stage_project()
    raw = project / "data" / "raw"
    imagefolder(raw, ["a", "b", "c"], 12)
    shutil.copy(raw / "a/a_000.png", raw / "b/dup.png")
    outputs = []
    for hash_seed in ("1", "2"):
        proc = run_stage(project, "split", PYTHONHASHSEED=hash_seed)
        assert proc.returncode == 0, proc.stderr
        assert "split: 3 classes (imagefolder)" in proc.stdout
        outputs.append({p.name: p.read_bytes() for p in (project / "data" / "index").iterdir()})
        outputs[-1]["metrics"] = (project / "metrics" / "data.json").read_bytes()
    assert outputs[0] == outputs[1]


def test_split_stage_bad_image_exits_2_with_one_error_line(stage_project):
    project = stage_project()
    raw = project / "data" / "raw"
    imagefolder(raw, ["a", "b"], 4)
    put(raw, "a/corrupt.jpg", b"\xff\xd8\xff garbage")
    assert_user_error_exit(run_stage(project, "split"), "data/raw/a/corrupt.jpg", "not a readable image")
    assert not (project / "data" / "index").exists()


def test_system_files_are_listed_not_silently_skipped(tmp_path):
    raw = imagefolder(tmp_path / "raw", ["a", "b"], 6)
    put(raw, ".DS_Store", b"\0\0\0\1Bud1")
    put(raw, "a/Thumbs.db", b"junk")
    put(raw, "__MACOSX/a/._a_000.png", b"resource fork")
    res = build_index(raw, P())
    check(raw, res)  # every file, junk included, is listed exactly once
    assert set(excluded(res, "system_file")) == {".DS_Store", "a/Thumbs.db", "__MACOSX/a/._a_000.png"}
    assert res.metrics["excluded"]["system_file"] == 3


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
