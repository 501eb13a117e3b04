"""Split-indexing: find the images, label them, split them, and find duplicates and leaks.

Indexes, never copies: the tables name files under ``data/raw``. Every file under ``data/raw`` ends up in
exactly one of ``train.csv``, ``val.csv``, ``test.csv`` or ``excluded.csv`` (with the reason), so nothing
is dropped silently.

Layouts understood (found below any single wrapping folder, e.g. ``64x64_SIGNS/``):

- course / CS230: ``{train,val,dev,test}_signs/{label}_*.jpg``; the label is the file name's first
  character (followed by ``_``).
- torchvision ImageFolder: ``[train|val|test/]class_name/**/*.{jpg,jpeg,png,bmp,webp}``.

Cost: reading and hashing is O(N) (one decode per file, on all cores) and dominates. Exact duplicates are
grouped by sha256 in O(N). Near duplicates use multi-index hashing on 256-bit difference hashes: a pair
within distance d agrees exactly on at least one of d+1 interleaved bit chunks (pigeonhole), so only images
sharing a chunk value are compared: O((d+1) N log N) sorting plus about (d+1) N^2 / 2^(256/(d+1)) candidate
pairs for unrelated images, which stays small next to decoding up to ~10^5 images (d = 17: 0.28 M candidates
at N = 20,000). ``bench/split_scaling.py`` measures it up to 20,000 images (``make bench``).
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
    HASH_BITS,
    HASH_DRAFT,
    MAX_MEGAPIXELS,
    ImageTooLarge,
    dhash,
    hamming,
    is_image_name,
    open_image,
)
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
    hash: np.ndarray | None = field(default=None, repr=False)


# ------------------------------------------------------------------------------------------- discover


def _split_of(name: str) -> str | None:
    m = _SPLIT_DIR.fullmatch(name)
    return _SPLIT_ALIAS[m.group(1).lower()] if m else None


def _listdir(path: Path) -> tuple[list[Path], list[Path]]:
    entries = sorted(p for p in path.iterdir() if p.name not in _JUNK)
    return [p for p in entries if p.is_dir()], [p for p in entries if not p.is_dir()]


def _walk_files(root: Path, skip_junk: bool = True) -> list[Path]:
    out = []
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
        if len(dirs) == 1 and not any(map(is_image_name, files)) and _split_of(dirs[0].name) is None:
            root = dirs[0]
        else:
            return root


def discover(raw: Path) -> tuple[list[Item], str]:
    """Every file under ``raw`` as an :class:`Item` with its given split and class (or a reason)."""
    root = data_root(raw)
    dirs, _ = _listdir(root)
    split_dirs = {d: _split_of(d.name) for d in dirs if _split_of(d.name)}
    rel = lambda p: p.relative_to(raw).as_posix()  # noqa: E731
    items: list[Item] = []
    claimed: set[Path] = set()

    def add_class_folders(base: Path, split: str | None) -> None:
        for cls_dir in _listdir(base)[0]:
            for f in _walk_files(cls_dir):
                items.append(Item(rel(f), split, cls_dir.name))
                claimed.add(f)

    if split_dirs:
        by_name = any(is_image_name(f.name) for d in split_dirs for f in _listdir(d)[1])
        layout = "filename-labels" if by_name else "imagefolder-splits"
        for d, split in split_dirs.items():
            for f in _listdir(d)[1]:
                m = _FILENAME_LABEL.fullmatch(f.name)
                bad = m is None and is_image_name(f.name)  # a non-image becomes 'not_an_image' below
                items.append(
                    Item(
                        rel(f),
                        split,
                        m.group(1) if m else None,
                        "bad_label" if bad else "",
                        "file name does not start with '<label>_'" if bad else "",
                    )
                )
                claimed.add(f)
            add_class_folders(d, split)
    else:
        layout = "imagefolder"
        add_class_folders(root, None)
    for f in _walk_files(raw, skip_junk=False):
        if f not in claimed:
            r = rel(f)
            if _is_junk(r):
                items.append(Item(r, None, None, "system_file", "operating-system metadata (e.g. .DS_Store)"))
            else:
                items.append(Item(r, None, None, "outside_layout", "not inside a split or class folder"))
    for it in items:
        if not it.reason and not is_image_name(it.path):
            it.reason, it.detail = "not_an_image", "extension is not one of .jpg .jpeg .png .bmp .webp"
    items.sort(key=lambda it: it.path)
    return items, layout


# ------------------------------------------------------------------------------------------------ read


def _read_one(path: Path, max_megapixels: float) -> tuple[str, int, int, np.ndarray | None, str, str]:
    """(sha256, width, height, dhash, reason, detail); reason is "" for a good image."""
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if not data:
        return digest, 0, 0, None, "unreadable", "empty file (0 bytes)"
    try:
        img = open_image(data, draft=HASH_DRAFT, max_megapixels=max_megapixels)
    except DECODE_ERRORS as exc:
        msg = re.sub(r" ?<[^<>]* at 0x[0-9a-fA-F]+>", "", f"{type(exc).__name__}: {exc}")  # no addresses
        reason = "too_large" if isinstance(exc, ImageTooLarge) else "unreadable"
        return digest, 0, 0, None, reason, msg.splitlines()[0][:200]
    width, height = img.info["source_size"]
    return digest, width, height, dhash(img), "", ""


def read_images(
    raw: Path, items: list[Item], workers: int | None = None, max_megapixels: float = MAX_MEGAPIXELS
) -> None:
    """Hash and decode every candidate image once (threads: Pillow releases the GIL while decoding)."""
    todo = [it for it in items if not it.reason]
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        results = pool.map(lambda p: _read_one(p, max_megapixels), (raw / it.path for it in todo), chunksize=64)
        bar = tqdm(results, total=len(todo), desc="read", unit="img", mininterval=0.5, disable=None)
        for it, (digest, w, h, hsh, reason, detail) in zip(todo, bar, strict=True):
            it.sha256, it.width, it.height, it.hash = digest, w, h, hsh
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


# ---------------------------------------------------------------------------------------- duplicates


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        a, b = self.find(i), self.find(j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)  # the smallest index (first path) is the group's root


def max_distance(similarity: float) -> int:
    return int(np.floor((1.0 - similarity) * HASH_BITS + 1e-9))


def hash_chunks(nbits: int, max_dist: int) -> list[np.ndarray]:
    """The ``max_dist + 1`` bit positions groups of multi-index hashing, each spread over the whole hash.

    Interleaved (bit k goes to chunk k mod m) rather than contiguous: neighbouring bits of a difference hash
    come from neighbouring pixels and agree more often than chance, which would fill the buckets.
    """
    m = min(max_dist + 1, nbits)
    return [np.arange(k, nbits, m) for k in range(m)]


def candidate_pairs(bits: np.ndarray, max_dist: int) -> np.ndarray:
    """Distinct pairs ``(i, j)``, ``i < j``, that agree exactly on at least one chunk (all within max_dist do)."""
    n = len(bits)
    found = []
    for cols in hash_chunks(bits.shape[1], max_dist):
        keys = np.packbits(bits[:, cols], axis=1)
        keys = np.pad(keys, ((0, 0), (0, 8 - keys.shape[1] % 8 if keys.shape[1] % 8 else 0)))
        keys = np.ascontiguousarray(keys).view(np.uint64)  # one row of uint64 words per image
        order = np.lexsort(keys.T[::-1])
        sk = keys[order]
        new_run = np.ones(n, dtype=bool)
        new_run[1:] = np.any(sk[1:] != sk[:-1], axis=1)
        starts = np.flatnonzero(new_run)
        sizes = np.diff(np.append(starts, n))
        for size in np.unique(sizes[sizes > 1]):  # all runs of one size at once
            runs = order[starts[sizes == size][:, None] + np.arange(size)]  # runs x size
            a, b = np.triu_indices(size, 1)
            found.append(np.stack([runs[:, a].ravel(), runs[:, b].ravel()], 1))
    if not found:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = np.sort(np.concatenate(found), axis=1).astype(np.int64)
    return np.unique(pairs, axis=0)


def near_pairs(hashes: np.ndarray, max_dist: int) -> list[tuple[int, int, int]]:
    """Pairs ``(i, j, distance)``, ``i < j``, with Hamming distance <= ``max_dist``, by multi-index hashing.

    A pair within distance d agrees exactly on at least one of d + 1 disjoint bit chunks (pigeonhole), so only
    images that share a chunk value are compared. Work: N log N sorting per chunk plus the candidate pairs,
    about (d + 1) * N^2 / 2^(256 / (d + 1)) for unrelated photos (~0.2 M at N = 20,000 with d = 17).
    """
    if len(hashes) < 2:
        return []
    pairs = candidate_pairs(np.unpackbits(hashes, axis=1), max_dist)
    out = []
    for block in range(0, len(pairs), 1 << 20):  # bounded memory for the distance computation
        p = pairs[block : block + (1 << 20)]
        dist = hamming(hashes[p[:, 0]], hashes[p[:, 1]])
        keep = dist <= max_dist
        out.extend((int(i), int(j), int(d)) for (i, j), d in zip(p[keep], dist[keep], strict=True))
    return out


def find_duplicates(items: list[Item], kept: list[int], similarity: float) -> tuple[list[dict], _UnionFind]:
    """Duplicate edges among ``kept`` items (exact: same bytes; near: similar hashes) and their groups."""
    uf = _UnionFind(len(items))
    edges: list[dict] = []
    by_sha: dict[str, list[int]] = defaultdict(list)
    for i in kept:
        by_sha[items[i].sha256].append(i)
    reps = []  # one image per distinct content
    for members in by_sha.values():
        reps.append(members[0])
        for j in members[1:]:
            uf.union(members[0], j)
            edges.append({"a": members[0], "b": j, "kind": "exact", "distance": 0})
    reps.sort()
    hashes = np.stack([items[i].hash for i in reps]) if reps else np.zeros((0, HASH_BITS // 8), np.uint8)
    for a, b, d in near_pairs(hashes, max_distance(similarity)):
        uf.union(reps[a], reps[b])
        edges.append({"a": reps[a], "b": reps[b], "kind": "near", "distance": d})
    return edges, uf


# ---------------------------------------------------------------------------------------------- split


def carve(items: list[Item], pool: list[int], into: str, fraction: float, seed: int, uf: _UnionFind) -> None:
    """Move ``fraction`` of ``pool`` (per class, whole duplicate groups at a time) to split ``into``."""
    rng = random.Random(f"{seed}:{into}")
    groups: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for i in pool:
        groups[items[i].cls][uf.find(i)].append(i)  # type: ignore[index]
    for cls in sorted(groups):
        by_root = groups[cls]
        roots = sorted(by_root)
        rng.shuffle(roots)
        n = sum(len(m) for m in by_root.values())
        # Half up (not Python's half-to-even); a class of 2 or more keeps at least one image on each side,
        # and the last group always stays: groups move whole, so counting files alone could empty the pool.
        target = int(fraction * n + 0.5)
        if n >= 2:
            target = min(max(target, 1), n - 1)
        taken = 0
        for k, root in enumerate(roots):
            if taken >= target or k == len(roots) - 1:
                break
            for i in by_root[root]:
                items[i].split = into
            taken += len(by_root[root])


def apply_dedupe(items: list[Item], kept: list[int], uf: _UnionFind, drop: bool, keep_test: bool) -> dict:
    """Leak and duplicate counts. With ``drop``: train loses copies of val/test images, val loses copies of
    test images, and copies inside one split collapse to one (the first by path). With ``keep_test`` (the
    data set came with a test split) the test split is never changed: its inner copies are only counted."""
    rank = {s: k for k, s in enumerate(SPLITS)}
    members: dict[int, list[int]] = defaultdict(list)
    for i in kept:
        members[uf.find(i)].append(i)
    cross = {"test": 0, "test_exact": 0, "val": 0, "val_exact": 0}
    within = dict.fromkeys(SPLITS, 0)
    conflicts = 0
    for group in members.values():
        if len(group) < 2:
            continue
        if len({items[i].cls for i in group}) > 1:
            conflicts += 1
        first_in: dict[str, int] = {}
        for i in group:  # group is in path order
            first_in.setdefault(items[i].split, i)  # type: ignore[arg-type]
        shas_by_split: dict[str, set[str]] = defaultdict(set)
        for i in group:
            shas_by_split[items[i].split].add(items[i].sha256)  # type: ignore[index]
        for i in group:
            it = items[i]
            later = [s for s in SPLITS if rank[s] > rank[it.split]]  # type: ignore[index]
            earlier = [s for s in SPLITS if rank[s] < rank[it.split]]  # type: ignore[index]
            if it.split in ("val", "test") and any(s in first_in for s in earlier):
                cross[it.split] += 1
                if any(it.sha256 in shas_by_split[s] for s in earlier):
                    cross[f"{it.split}_exact"] += 1
            if first_in[it.split] != i:  # type: ignore[index]
                within[it.split] += 1  # type: ignore[index]
            if not drop or (it.split == "test" and keep_test):
                continue
            copy_in = next((s for s in reversed(later) if s in first_in), None)  # the copy that survives
            if copy_in is not None:
                it.reason = "duplicate"
                it.detail = f"copy of {items[first_in[copy_in]].path} in {copy_in}"
            elif first_in[it.split] != i:  # type: ignore[index]
                it.reason = "duplicate"
                it.detail = f"copy of {items[first_in[it.split]].path} in {it.split}"  # type: ignore[index]
    return {"cross_split_duplicates": cross, "within_split_duplicates": within, "label_conflicts": conflicts}


# ----------------------------------------------------------------------------------------------- main


@dataclass
class IndexResult:
    tables: dict[str, pd.DataFrame]
    classes: list[str]
    layout: str
    duplicates: pd.DataFrame
    excluded: pd.DataFrame
    metrics: dict


def build_index(raw: Path, params: DataParams, workers: int | None = None) -> IndexResult:
    if not raw.is_dir():
        raise UserError(f"{raw} does not exist; run the download stage first (dvc repro download)")
    items, layout = discover(raw)
    read_images(raw, items, workers, params.max_image_megapixels)
    enforce_bad_file_policy(raw, items, params.on_bad_file)
    kept = [i for i, it in enumerate(items) if not it.reason]
    if not kept:
        raise UserError(
            f"no images found under {raw} (layouts understood: {{train,val,test}}_*/<label>_*.jpg "
            "or [split/]class_name/*.jpg); check data.source"
        )
    classes = sorted({items[i].cls for i in kept})  # type: ignore[type-var]
    edges, uf = find_duplicates(items, kept, params.near_duplicate_similarity)
    given = {items[i].split for i in kept}
    for split, fraction in (("test", params.test_fraction), ("val", params.val_fraction)):  # test first
        if split not in given:
            pool = [i for i in kept if items[i].split in (None, "train")]
            carve(items, pool, split, fraction, params.split_seed, uf)
    for i in kept:
        if items[i].split is None:
            items[i].split = "train"
    dup_metrics = apply_dedupe(items, kept, uf, drop=params.dedupe == "drop", keep_test="test" in given)

    label_of = {c: i for i, c in enumerate(classes)}
    tables = {}
    for split in SPLITS:
        rows = [it for it in items if it.split == split and not it.reason]
        tables[split] = pd.DataFrame(
            {
                "path": [it.path for it in rows],
                "label": [label_of[it.cls] for it in rows],  # type: ignore[index]
                "class": [it.cls for it in rows],
                "sha256": [it.sha256 for it in rows],
                "width": [it.width for it in rows],
                "height": [it.height for it in rows],
            },
            columns=INDEX_COLUMNS,
        )
    no_train = [c for c in classes if not (tables["train"]["class"] == c).any()]
    if no_train:
        raise UserError(
            f"class {no_train[0]!r} has no training images after indexing; add some, or remove "
            "the class from the data set"
        )
    missing = [(s, c) for s in SPLITS for c in classes if not (tables[s]["class"] == c).any()]

    dup_rows = []
    for e in edges:
        a, b = items[e["a"]], items[e["b"]]
        dup_rows.append(
            {
                "path_a": a.path,
                "split_a": a.split,
                "path_b": b.path,
                "split_b": b.split,
                "kind": e["kind"],
                "distance": e["distance"],
                "similarity": round(1 - e["distance"] / HASH_BITS, 4),
                "cross_split": a.split != b.split,
                "same_class": a.cls == b.cls,
                "group": items[uf.find(e["a"])].path,
            }
        )
    duplicates = pd.DataFrame(
        dup_rows,
        columns=[
            "path_a",
            "split_a",
            "path_b",
            "split_b",
            "kind",
            "distance",
            "similarity",
            "cross_split",
            "same_class",
            "group",
        ],
    )
    excluded = pd.DataFrame(
        [
            {"path": it.path, "split": it.split or "", "reason": it.reason, "detail": it.detail}
            for it in items
            if it.reason
        ],
        columns=["path", "split", "reason", "detail"],
    )
    reasons = ("duplicate", "not_an_image", "outside_layout", "system_file", "bad_label", "unreadable", "too_large")
    metrics = {
        "layout": layout,
        "classes": len(classes),
        "files_scanned": len(items),
        "images": {s: len(tables[s]) for s in SPLITS},
        "per_class": {s: {c: int((tables[s]["class"] == c).sum()) for c in classes} for s in SPLITS},
        "excluded": {r: sum(it.reason == r for it in items) for r in reasons},
        "duplicate_pairs": {
            "exact": sum(e["kind"] == "exact" for e in edges),
            "near": sum(e["kind"] == "near" for e in edges),
        },
        "near_duplicate_max_distance": max_distance(params.near_duplicate_similarity),
        "classes_missing_from_a_split": len(missing),
        **dup_metrics,
    }
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
