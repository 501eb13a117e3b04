"""Split-indexing: find the images, label them, split them, and find duplicates and leaks.

Indexes, never copies: the tables name files under ``data/raw``. Every file under ``data/raw`` ends up in
exactly one of ``train.csv``, ``val.csv``, ``test.csv`` or ``excluded.csv`` (with the reason), so nothing
is dropped silently.

Layouts understood (found below any single wrapping folder, e.g. ``64x64_SIGNS/``):

- course / CS230: ``{train,val,dev,test}_signs/{label}_*.jpg``; the label is the file name's first
  character (followed by ``_``).
- torchvision ImageFolder: ``[train|val|test/]class_name/**/*.{jpg,jpeg,png,bmp,webp}``.

Steps (:func:`build_index`): discover the files, read the images (sha256 and a thumbnail), find their
duplicates, carve the splits the layout does not give, drop copies, and tabulate. Reading is O(N), one decode
per file on all cores; the duplicate search is :mod:`handsigns.neardup` (its docstring: what counts as a copy,
the algorithm and what it costs).
"""

from __future__ import annotations

import hashlib
import os
import random
import re
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from handsigns.errors import UserError
from handsigns.files import atomic_dir, write_json
from handsigns.imaging import (
    DECODE_ERRORS,
    MAX_MEGAPIXELS,
    THUMB_DRAFT,
    ImageTooLarge,
    decoders,
    is_image_name,
    open_image,
    thumbnail,
)
from handsigns.neardup import Edge, UnionFind, find_duplicates
from handsigns.params.data import DataParams

SPLITS = ("train", "val", "test")
_SPLIT_DIR = re.compile(r"(train|training|val|valid|validation|dev|test|testing)(?:[_\-. ].*)?", re.I)
_SPLIT_ALIAS = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}
_FILENAME_LABEL = re.compile(r"([0-9A-Za-z])_.+")
_JUNK = {"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini"}
INDEX_COLUMNS = ["path", "label", "class", "sha256", "width", "height"]


@dataclass
class Item:
    path: str  # relative to the raw root, POSIX separators
    split: str | None  # given by the layout; None until carved
    cls: str | None  # class name; None when the layout gives none
    reason: str = ""  # why it is excluded ("" = kept)
    detail: str = ""
    sha256: str = ""
    width: int = 0
    height: int = 0
    thumb: np.ndarray | None = field(default=None, repr=False)


# ------------------------------------------------------------------------------------------- discover


def _split_of(name: str) -> str | None:
    m = _SPLIT_DIR.fullmatch(name)
    return _SPLIT_ALIAS[m.group(1).lower()] if m else None


def _listdir(path: Path) -> tuple[list[Path], list[Path]]:
    entries = sorted(p for p in path.iterdir() if p.name not in _JUNK)
    return [p for p in entries if p.is_dir()], [p for p in entries if not p.is_dir()]


def _walk_files(root: Path, skip_junk: bool = True) -> list[Path]:
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not (skip_junk and d in _JUNK))
        out.extend(Path(dirpath) / f for f in sorted(filenames) if not (skip_junk and f in _JUNK))
    return out


def _is_junk(rel_path: str) -> bool:
    return any(part in _JUNK for part in rel_path.split("/"))


def data_root(raw: Path) -> Path:
    """Descend through single wrapping folders (``64x64_SIGNS/``) to where the data set starts."""
    root = raw
    while True:
        dirs, files = _listdir(root)  # a stray README next to the wrapping folder must not stop the descent
        if len(dirs) == 1 and not any(is_image_name(f.name) for f in files) and _split_of(dirs[0].name) is None:
            root = dirs[0]
        else:
            return root


def _named_item(rel: str, name: str, split: str) -> Item:
    """A file directly in a course-layout split folder: its label is the name's first character (then ``_``)."""
    m = _FILENAME_LABEL.fullmatch(name)
    if m is None and is_image_name(name):  # a non-image becomes 'not_an_image' in discover
        return Item(rel, split, None, "bad_label", "file name does not start with '<label>_'")
    return Item(rel, split, m.group(1) if m else None)


def _unclaimed_item(rel: str) -> Item:
    """A file the layout does not place: operating-system metadata, or anything else."""
    if _is_junk(rel):
        return Item(rel, None, None, "system_file", "operating-system metadata (e.g. .DS_Store)")
    return Item(rel, None, None, "outside_layout", "not inside a split or class folder")


def discover(raw: Path) -> tuple[list[Item], str]:
    """Every file under ``raw`` as an :class:`Item` with its given split and class (or a reason)."""
    root = data_root(raw)
    named = {d: _split_of(d.name) for d in _listdir(root)[0]}
    split_dirs = {d: split for d, split in named.items() if split}
    claimed: dict[Path, Item] = {}  # the files the layout places

    def rel(p: Path) -> str:
        return p.relative_to(raw).as_posix()

    def add_class_folders(base: Path, split: str | None) -> None:
        for cls_dir in _listdir(base)[0]:
            for f in _walk_files(cls_dir):
                claimed[f] = Item(rel(f), split, cls_dir.name)

    if split_dirs:
        by_name = any(is_image_name(f.name) for d in split_dirs for f in _listdir(d)[1])
        layout = "filename-labels" if by_name else "imagefolder-splits"
        for d, split in split_dirs.items():
            claimed.update((f, _named_item(rel(f), f.name, split)) for f in _listdir(d)[1])
            add_class_folders(d, split)
    else:
        layout = "imagefolder"
        add_class_folders(root, None)
    items = [
        *claimed.values(),
        *(_unclaimed_item(rel(f)) for f in _walk_files(raw, skip_junk=False) if f not in claimed),
    ]
    for it in items:
        if not it.reason and not is_image_name(it.path):
            it.reason, it.detail = "not_an_image", "extension is not one of .jpg .jpeg .png .bmp .webp"
    items.sort(key=lambda it: it.path)
    return items, layout


# ------------------------------------------------------------------------------------------------ read


def _read_one(path: Path, max_megapixels: float) -> tuple[str, int, int, np.ndarray | None, str, str]:
    """(sha256, width, height, thumbnail, reason, detail); reason is "" for a good image."""
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if not data:
        return digest, 0, 0, None, "unreadable", "empty file (0 bytes)"
    try:
        img = open_image(data, draft=THUMB_DRAFT, max_megapixels=max_megapixels)
    except DECODE_ERRORS as exc:
        msg = re.sub(r" ?<[^<>]* at 0x[0-9a-fA-F]+>", "", f"{type(exc).__name__}: {exc}")  # no addresses
        reason = "too_large" if isinstance(exc, ImageTooLarge) else "unreadable"
        return digest, 0, 0, None, reason, msg.splitlines()[0][:200]
    width, height = img.info["source_size"]
    return digest, width, height, thumbnail(img), "", ""


def read_images(
    raw: Path, items: list[Item], workers: int | None = None, max_megapixels: float = MAX_MEGAPIXELS
) -> None:
    """Hash and decode every candidate image once (threads: Pillow releases the GIL while decoding)."""
    todo = [it for it in items if not it.reason]
    workers = workers or decoders()
    with ThreadPoolExecutor(workers) as pool:
        results = pool.map(lambda p: _read_one(p, max_megapixels), (raw / it.path for it in todo), chunksize=64)
        bar = tqdm(results, total=len(todo), desc="read", unit="img", mininterval=0.5, disable=None)
        for it, (digest, w, h, thumb, reason, detail) in zip(todo, bar, strict=True):
            it.sha256, it.width, it.height, it.thumb = digest, w, h, thumb
            it.reason, it.detail = reason, detail


_BAD = {  # reason: (what the error line says of the file, what to do besides removing it)
    "bad_label": ("has no valid label", ""),
    "unreadable": ("is not a readable image", ""),
    "too_large": ("is too large to decode", "raise data.max_image_megapixels if it is a genuine photo, "),
}


def enforce_bad_file_policy(raw: Path, items: list[Item], on_bad_file: str) -> None:
    bad = [it for it in items if it.reason in _BAD]
    if bad and on_bad_file == "error":
        first = bad[0]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        what, fix = _BAD[first.reason]
        raise UserError(
            f"{(raw / first.path).as_posix()} {what}: {first.detail}{more}; fix or remove it, {fix}or set "
            "data.on_bad_file: skip to list such files in data/index/excluded.csv"
        )


# ---------------------------------------------------------------------------------------------- images


@dataclass
class Indexed:
    """A readable image's row in the index. ``split`` is the layout's (train when it gives none) until
    :func:`carve` moves the image; ``reason`` is set when :func:`apply_dedupe` drops it as a copy."""

    path: str
    cls: str
    split: str
    sha256: str
    width: int
    height: int
    thumb: np.ndarray = field(repr=False)
    reason: str = ""  # "duplicate" once dropped ("" = kept)
    detail: str = ""


def readable(raw: Path, items: list[Item]) -> list[Indexed]:
    """The items read as images (nothing excludes them), in path order; a user error when there is none."""
    images = []
    for it in items:
        if it.reason:
            continue
        if it.cls is None or it.thumb is None:  # discover and read_images give every such file a reason
            raise AssertionError(f"{it.path} was kept without a class or a thumbnail")
        images.append(Indexed(it.path, it.cls, it.split or "train", it.sha256, it.width, it.height, it.thumb))
    if not images:
        raise UserError(
            f"no images found under {raw} (layouts understood: {{train,val,test}}_*/<label>_*.jpg "
            "or [split/]class_name/*.jpg); check data.source"
        )
    return images


# ---------------------------------------------------------------------------------------------- split


def carve(images: list[Indexed], pool: list[int], into: str, fraction: float, seed: int, uf: UnionFind) -> None:
    """Move ``fraction`` of ``pool`` (per class, whole duplicate groups at a time) to split ``into``."""
    rng = random.Random(f"{seed}:{into}")
    by_class: dict[str, list[int]] = defaultdict(list)
    for i in pool:
        by_class[images[i].cls].append(i)
    for cls in sorted(by_class):
        by_root = uf.groups(by_class[cls])
        roots = sorted(by_root)
        rng.shuffle(roots)
        n = len(by_class[cls])
        # Half up (not Python's half-to-even); a class of 2 or more keeps at least one image on each side,
        # and the last group (in shuffled order) always stays: groups move whole, so counting files alone
        # could empty the pool.
        target = int(fraction * n + 0.5)
        if n >= 2:
            target = min(max(target, 1), n - 1)
        taken = 0
        for root in roots[:-1]:
            size = len(by_root[root])
            # A group moves only when it brings the count closer to the target: a large group is passed over
            # (it stays in the pool) rather than overshooting, so the fraction holds within a few images.
            if abs(taken + size - target) < abs(taken - target):
                for i in by_root[root]:
                    images[i].split = into
                taken += size


def carve_missing_splits(images: list[Indexed], given: set[str], uf: UnionFind, params: DataParams) -> None:
    """Carve the splits the layout did not give out of train: test first, then val."""
    for split, fraction in (("test", params.test_fraction), ("val", params.val_fraction)):
        if split not in given:
            pool = [i for i, im in enumerate(images) if im.split == "train"]
            carve(images, pool, split, fraction, params.split_seed, uf)


# ---------------------------------------------------------------------------------------------- dedupe


def _first_in(images: list[Indexed], group: list[int]) -> dict[str, int]:
    """Each split's first member of ``group`` (which is in path order)."""
    first: dict[str, int] = {}
    for i in group:
        first.setdefault(images[i].split, i)
    return first


def _count_copies(images: list[Indexed], group: list[int], cross: dict[str, int], within: dict[str, int]) -> None:
    """Add ``group``'s leaks (a val/test image with a copy in an earlier split; ``_exact``: the same bytes
    there) to ``cross``, and its images that are not the first of their split to ``within``."""
    first_in = _first_in(images, group)
    shas_by_split: dict[str, set[str]] = defaultdict(set)
    for i in group:
        shas_by_split[images[i].split].add(images[i].sha256)
    for i in group:
        im = images[i]
        earlier = SPLITS[: SPLITS.index(im.split)]
        if im.split in ("val", "test") and any(s in first_in for s in earlier):
            cross[im.split] += 1
            if any(im.sha256 in shas_by_split[s] for s in earlier):
                cross[f"{im.split}_exact"] += 1
        if first_in[im.split] != i:
            within[im.split] += 1


def _drop_copies(images: list[Indexed], group: list[int], keep_test: bool) -> None:
    """Mark the copies in ``group`` dropped: each image with a copy in a later split, or not the first of its
    own; the test split untouched with ``keep_test``."""
    first_in = _first_in(images, group)
    for i in group:
        im = images[i]
        if im.split == "test" and keep_test:
            continue
        later = SPLITS[SPLITS.index(im.split) + 1 :]
        copy_in = next((s for s in reversed(later) if s in first_in), None)  # the copy that survives
        if copy_in is None and first_in[im.split] != i:
            copy_in = im.split
        if copy_in is not None:
            im.reason, im.detail = "duplicate", f"copy of {images[first_in[copy_in]].path} in {copy_in}"


def apply_dedupe(images: list[Indexed], uf: UnionFind, drop: bool, keep_test: bool) -> dict:
    """Leak and duplicate counts. With ``drop``: train loses copies of val/test images, val loses copies of
    test images, and copies inside one split collapse to one (the first by path). With ``keep_test`` (the
    data set came with a test split) the test split is never changed: its inner copies are only counted."""
    cross = {"test": 0, "test_exact": 0, "val": 0, "val_exact": 0}
    within = dict.fromkeys(SPLITS, 0)
    conflicts = 0
    for group in uf.groups(range(len(images))).values():
        if len(group) < 2:
            continue
        if len({images[i].cls for i in group}) > 1:
            conflicts += 1
        _count_copies(images, group, cross, within)
        if drop:
            _drop_copies(images, group, keep_test)
    return {"cross_split_duplicates": cross, "within_split_duplicates": within, "label_conflicts": conflicts}


# --------------------------------------------------------------------------------------------- records

DUPLICATE_COLUMNS = [
    "path_a",
    "split_a",
    "path_b",
    "split_b",
    "kind",
    "difference",
    "joined",
    "cross_split",
    "same_class",
    "group",
]
EXCLUDED_COLUMNS = ["path", "split", "reason", "detail"]
EXCLUSION_REASONS = (
    "duplicate",
    "not_an_image",
    "outside_layout",
    "system_file",
    "bad_label",
    "unreadable",
    "too_large",
)


def split_tables(images: list[Indexed], classes: list[str]) -> dict[str, pd.DataFrame]:
    """``train``, ``val`` and ``test``: the kept images of each, in path order; a user error when a class
    has no training image left."""
    label_of = {c: i for i, c in enumerate(classes)}
    tables = {}
    for split in SPLITS:
        rows = [im for im in images if im.split == split and not im.reason]
        tables[split] = pd.DataFrame(
            {
                "path": [im.path for im in rows],
                "label": [label_of[im.cls] for im in rows],
                "class": [im.cls for im in rows],
                "sha256": [im.sha256 for im in rows],
                "width": [im.width for im in rows],
                "height": [im.height for im in rows],
            },
            columns=INDEX_COLUMNS,
        )
    no_train = [c for c in classes if not (tables["train"]["class"] == c).any()]
    if no_train:
        raise UserError(
            f"class {no_train[0]!r} has no training images after indexing; add some, or remove "
            "the class from the data set"
        )
    return tables


def duplicates_table(images: list[Indexed], edges: list[Edge], uf: UnionFind) -> pd.DataFrame:
    """One row per duplicate pair, with the splits the pair ended in and its group (the group's first path)."""
    rows = []
    for e in edges:
        a, b = images[e.a], images[e.b]
        rows.append(
            {
                "path_a": a.path,
                "split_a": a.split,
                "path_b": b.path,
                "split_b": b.split,
                "kind": e.kind,
                "difference": e.difference,
                "joined": e.joined,
                "cross_split": a.split != b.split,
                "same_class": a.cls == b.cls,
                "group": images[uf.find(e.a)].path,
            }
        )
    return pd.DataFrame(rows, columns=DUPLICATE_COLUMNS)


def excluded_table(items: list[Item], images: list[Indexed]) -> pd.DataFrame:
    """Every file left out, in path order: those never read as images and the copies dedupe dropped."""
    rows = [(it.path, it.split or "", it.reason, it.detail) for it in items if it.reason]
    rows += [(im.path, im.split, im.reason, im.detail) for im in images if im.reason]
    return pd.DataFrame(sorted(rows, key=lambda row: row[0]), columns=EXCLUDED_COLUMNS)


@dataclass
class IndexResult:
    tables: dict[str, pd.DataFrame]
    classes: list[str]
    layout: str
    duplicates: pd.DataFrame
    excluded: pd.DataFrame
    metrics: dict


def summarize(
    layout: str,
    classes: list[str],
    tables: dict[str, pd.DataFrame],
    duplicates: pd.DataFrame,
    excluded: pd.DataFrame,
    *,
    files_scanned: int,
    max_difference: float,
    dissolved: list[int],
    leaks: dict,
) -> dict:
    """The split report (``metrics/data/split.json``): counts of what the tables hold, and the leaks."""
    missing = [(s, c) for s in SPLITS for c in classes if not (tables[s]["class"] == c).any()]
    return {
        "layout": layout,
        "classes": len(classes),
        "files_scanned": files_scanned,
        "images": {s: len(tables[s]) for s in SPLITS},
        "per_class": {s: {c: int((tables[s]["class"] == c).sum()) for c in classes} for s in SPLITS},
        "excluded": {r: int((excluded.reason == r).sum()) for r in EXCLUSION_REASONS},
        "duplicate_pairs": {k: int((duplicates.kind == k).sum()) for k in ("exact", "near")},
        "near_duplicate_max_difference": max_difference,
        "near_duplicate_groups_dissolved": {"groups": len(dissolved), "largest": max(dissolved, default=0)},
        "classes_missing_from_a_split": len(missing),
        **leaks,
    }


# ----------------------------------------------------------------------------------------------- main


def build_index(raw: Path, params: DataParams, workers: int | None = None) -> IndexResult:
    """Index ``raw``: discover its files, read the images, find their duplicates, carve the splits
    the layout does not give, drop copies (``data.dedupe``), and tabulate; one function a step."""
    if not raw.is_dir():
        raise UserError(f"{raw} does not exist; run the download stage first (dvc repro download)")
    items, layout = discover(raw)
    read_images(raw, items, workers, params.max_image_megapixels)
    enforce_bad_file_policy(raw, items, params.on_bad_file)
    images = readable(raw, items)

    edges, uf, dissolved = find_duplicates(
        [im.sha256 for im in images],
        [im.thumb for im in images],
        [im.cls for im in images],
        params.near_duplicate_max_difference,
    )
    given = {im.split for im in images}  # the layout's splits, before carving
    carve_missing_splits(images, given, uf, params)
    leaks = apply_dedupe(images, uf, drop=params.dedupe == "drop", keep_test="test" in given)

    classes = sorted({im.cls for im in images})
    tables = split_tables(images, classes)
    duplicates = duplicates_table(images, edges, uf)
    excluded = excluded_table(items, images)
    metrics = summarize(
        layout,
        classes,
        tables,
        duplicates,
        excluded,
        files_scanned=len(items),
        max_difference=params.near_duplicate_max_difference,
        dissolved=dissolved,
        leaks=leaks,
    )
    return IndexResult(tables, classes, layout, duplicates, excluded, metrics)


def headline(metrics: dict) -> dict:
    """The few figures DVC shows as metrics (``dvc exp show`` columns): classes, images per split, files
    excluded. The full report (per class, duplicates and leaks by kind) is the split stage's details file."""
    return {"classes": metrics["classes"], "images": metrics["images"], "excluded": sum(metrics["excluded"].values())}


def write_index(result: IndexResult, out_dir: Path, metrics_path: Path, details_path: Path) -> None:
    with atomic_dir(out_dir) as tmp:
        for split, df in result.tables.items():
            df.to_csv(tmp / f"{split}.csv", index=False, lineterminator="\n")
        result.duplicates.to_csv(tmp / "duplicates.csv", index=False, lineterminator="\n")
        result.excluded.to_csv(tmp / "excluded.csv", index=False, lineterminator="\n")
        write_json(tmp / "classes.json", {"classes": result.classes, "layout": result.layout})
    write_json(details_path, result.metrics)
    write_json(metrics_path, headline(result.metrics))
