"""build_index() / write_index() on generated data sets in every layout, with bad and system files; the split
stage. Carving missing splits: test_split_carving.py; duplicates and leaks: test_split_duplicates.py."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from handsigns.errors import UserError
from handsigns.split import SPLITS, build_index, write_index

from conftest import assert_user_error_exit, encode, image_array, run_stage
from helpers.raw_trees import LABELS, cs230, imagefolder, img, put
from helpers.split_index import P, check, excluded

# ------------------------------------------------------------------------------------------- layouts


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


# ----------------------------------------------------------------------------------------- bad files


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


def test_system_files_are_listed_not_silently_skipped(tmp_path):
    raw = imagefolder(tmp_path / "raw", ["a", "b"], 6)
    put(raw, ".DS_Store", b"\0\0\0\1Bud1")
    put(raw, "a/Thumbs.db", b"junk")
    put(raw, "__MACOSX/a/._a_000.png", b"resource fork")
    res = build_index(raw, P())
    check(raw, res)  # every file, junk included, is listed exactly once
    assert set(excluded(res, "system_file")) == {".DS_Store", "a/Thumbs.db", "__MACOSX/a/._a_000.png"}
    assert res.metrics["excluded"]["system_file"] == 3


# ------------------------------------------------------------------------------------------- writing


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


# ----------------------------------------------------------------------------------- the split stage


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
