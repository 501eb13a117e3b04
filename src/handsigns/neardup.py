"""Duplicate search: which images are copies of which, and the groups the copies join into.

Exact copies share a sha256 (grouped in O(N)). Near copies are compared in pixel space, one image per distinct
content: two images are the same picture when their 16x16 grey thumbnails (:func:`handsigns.imaging.thumbnail`)
differ by at most ``data.near_duplicate_max_difference`` (0.03) in root-mean-square, as a fraction of the grey
range, once the mean difference (a brightness offset) is taken out (:func:`difference`), and by at most 0.3 of
their own *detail*: the root-mean-square of their grey levels once the best-fitting plane (an even lighting
gradient) is taken out (:func:`detail`). A faint shape or a small mark on a plain or graded background changes
few grey levels, so two different ones can be close in absolute terms, but not relative to how little the
images hold beyond their background.

Why pixels and not a perceptual hash (this module used a 256-bit difference hash until commit 9f15b5d, 2026-12-02):
the hash both missed copies and invented them. On the 64 px SIGNS photos it missed most re-encodes (a JPEG at
quality 50 or a half-size copy was within its 17-bit threshold 37 % and 40 % of the time), and on 1,797 small scans
of handwritten digits it called 13,190 pairs of distinct images "the same": a low-detail image has few informative
gradients, so two writings of a "1" hash alike. Measured on those two sets and on copies made to order
(``docs/data.md``): re-encodes and resizes differ by at most 0.009, a quarter-size copy by 0.021, a 10 % brightness
or contrast change by 0.023, SIGNS' burst shots (consecutive photo numbers) by 0.012 to 0.03, and the closest two
distinct digits by 0.042. The limit sits between. Relative to their detail, SIGNS' burst shots differ by at most
0.245 (0.223 in grey at 28 px); generated look-alikes the absolute limit alone pairs (thousands, most across
classes) by at least 0.349 (two Zs of the same size): 0.3 sits between. Relative to the plain standard deviation
(this module's rule until the small-letters set of ``bench/generality.py``) a mark on a colour gradient passed: the
gradient is contrast, not detail (two letters a tenth of the image's height, a D and an F, 0.248).

The search is exact and machine-independent: thumbnails hold integers 0..255, so every dot product of two
(at most 256 x 255^2 < 2^24) is computed exactly in float32 whatever the order of the sums, and the tests run
on integers in float64 (all below 2^53; the detail's plane through integer gradient sums, :func:`_detail_units`).
Candidates are pruned by the triangle inequality: the images are sorted by the norm of their mean-removed
thumbnail, and two whose norms differ by more than the limit cannot be within it (this prunes little on
images of similar contrast). Cost: about N^2 / 2 dot products of 256 values, in tiles of ``_TILE`` x ``_TILE``
(16 MB of float32), each tile screened in float32 and its few survivors tested exactly:
``bench/split_scaling.py`` measures it against decoding the images (the search overtakes decoding of small
files between 10,000 and 20,000 images).

Near copies chain into groups through union-find. A chain of look-alikes can grow until it swallows a class,
which would make the split carve or drop the class whole; so a group of near copies holding more than half
of its class's distinct images is *dissolved*: its pairs are still reported (``joined`` false), but its
images are not treated as copies of each other (:func:`find_duplicates`).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from handsigns.imaging import THUMB_SIZE

_N = THUMB_SIZE * THUMB_SIZE  # values per thumbnail
_TILE = 2048  # rows x columns of one tile of dot products: bounded memory
# A pair's difference must also be at most this fraction of the images' own detail (:func:`detail`,
# root-mean-square of the two), as a ratio of integers so the test stays exact.
_RELATIVE = (3, 10)
# Thumbnail columns (and rows) about the centre, doubled to integers: -15, -13, ..., 15; sum of their squares.
_AXIS = 2 * np.arange(THUMB_SIZE) - (THUMB_SIZE - 1)
_AXIS_SQ = int((_AXIS**2).sum()) * THUMB_SIZE  # over the whole thumbnail, one axis


class UnionFind:
    """Disjoint sets over ``0..n-1``; each set's root is its smallest member."""

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

    def groups(self, indices: Iterable[int]) -> dict[int, list[int]]:
        """``indices`` by the root of their set, each list in the order given."""
        members: dict[int, list[int]] = defaultdict(list)
        for i in indices:
            members[self.find(i)].append(i)
        return members


def difference(a: np.ndarray, b: np.ndarray) -> float:
    """Root-mean-square difference of two thumbnails in [0, 1] of the grey range, the mean difference removed
    (a brighter copy is still a copy), rounded as the duplicates table reports it."""
    d = a.astype(np.float64) - b.astype(np.float64)
    return round(float(np.sqrt(np.mean((d - d.mean()) ** 2)) / 255), 4)


def detail(thumb: np.ndarray) -> float:
    """Root-mean-square of a thumbnail's grey levels, in [0, 1] of the grey range, once its best-fitting plane
    (mean and an even gradient across it) is taken out: what the image holds beyond smooth lighting."""
    units = _detail_units(thumb.reshape(1, -1).astype(np.float64))[0]
    return float(np.sqrt(max(units, 0.0) / (_AXIS_SQ * _N * _N)) / 255)


def _detail_units(x: np.ndarray) -> np.ndarray:
    """Per row of ``x`` (thumbnails as float64 integers): ``_AXIS_SQ x N x`` the squared detail summed over the
    thumbnail, an integer. The plane's axes are orthogonal on the grid, so its share of the variance is the
    squared gradient sum along each axis over that axis's squared sum."""
    grid = x.reshape(len(x), THUMB_SIZE, THUMB_SIZE)
    gx = (grid * _AXIS[None, None, :]).sum((1, 2))  # columns
    gy = (grid * _AXIS[None, :, None]).sum((1, 2))  # rows
    spread = _N * (x * x).sum(1) - x.sum(1) ** 2  # N^2 x variance
    return _AXIS_SQ * spread - _N * (gx * gx + gy * gy)


def _limit(max_difference: float) -> float:
    """``max_difference`` in the integer units :func:`near_pairs` compares: N^2 x mean-removed MSE in grey levels^2."""
    return float(np.floor((max_difference * 255 * _N) ** 2 + 1e-6))


def near_pairs(thumbs: np.ndarray, max_difference: float) -> list[tuple[int, int, float]]:
    """Pairs ``(i, j, difference)``, ``i < j``, of rows of ``thumbs`` (N x 256 uint8) at most ``max_difference``
    apart, in ``(i, j)`` order (the module's docstring: how, and what it costs)."""
    n = len(thumbs)
    if n < 2:
        return []
    x = thumbs.reshape(n, -1).astype(np.float64)
    total, sq = x.sum(1), (x * x).sum(1)
    norm = np.sqrt(np.maximum(sq - total * total / _N, 0))  # of the mean-removed thumbnail
    order = np.argsort(norm, kind="stable")
    x, total, sq, norm = x[order].astype(np.float32), total[order], sq[order], norm[order]
    limit, reach = _limit(max_difference), max_difference * 255 * np.sqrt(_N) * (1 + 1e-6) + 1e-6
    slack = limit * 1.01 + 1e5  # float32's rounding of the rough pass is below 1e4 units
    total32, sq32 = total.astype(np.float32), sq.astype(np.float32)
    detail_units = _detail_units(thumbs.reshape(n, -1).astype(np.float64))[order]  # the score's units x _AXIS_SQ
    num, den = _RELATIVE
    found = []
    for r0 in range(0, n, _TILE):
        r1 = min(r0 + _TILE, n)
        end = int(np.searchsorted(norm, norm[r1 - 1] + reach, side="right"))  # farther norms cannot be near
        for c0 in range(r0, end, _TILE):
            c1 = min(c0 + _TILE, end)
            dot = x[r0:r1] @ x[c0:c1].T  # exact: integers below 2^24
            # A rough pass in float32 (rounding far below the slack), then the exact test on what it keeps.
            dsum = total32[r0:r1, None] - total32[None, c0:c1]
            rough = _N * (sq32[r0:r1, None] + sq32[None, c0:c1] - 2 * dot) - dsum * dsum
            rows, cols = np.nonzero(rough <= slack)
            rows, cols = rows + r0, cols + c0
            dsum = total[rows] - total[cols]
            score = _N * (sq[rows] + sq[cols] - 2 * dot[rows - r0, cols - c0].astype(np.float64)) - dsum * dsum
            relative = 2 * den * den * _AXIS_SQ * score <= num * num * (detail_units[rows] + detail_units[cols])
            near = (score <= limit) & relative
            rows, cols = rows[near], cols[near]
            keep = rows < cols
            found.append(np.stack([rows[keep], cols[keep]], 1))
    pairs = np.sort(order[np.concatenate(found)], axis=1) if found else np.zeros((0, 2), np.int64)
    pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
    return [(int(i), int(j), difference(thumbs[i], thumbs[j])) for i, j in pairs]


@dataclass(frozen=True)
class Edge:
    """Image ``a`` and a later image ``b`` are copies: ``exact`` (same bytes) or ``near`` (alike pixels).
    ``joined``: the pair counts as a copy (false: its group of near copies was dissolved)."""

    a: int
    b: int
    kind: str
    difference: float  # 0 for exact copies
    joined: bool = True


def _swallows(members: list[int], classes: Sequence[str], per_class: Counter) -> bool:
    """A group of near copies (distinct contents) holding more than half of its main class's distinct images."""
    cls, count = Counter(classes[i] for i in members).most_common(1)[0]
    return len(members) > 2 and count > per_class[cls] / 2


def find_duplicates(
    digests: Sequence[str], thumbs: Sequence[np.ndarray], classes: Sequence[str], max_difference: float
) -> tuple[list[Edge], UnionFind, list[int]]:
    """Copies among images ``0..n-1`` given their sha256 ``digests``, ``thumbs`` and ``classes``: the exact
    edges (each to the first image of its content), the near ones (between the first images of two contents),
    the groups they join into, and the sizes (distinct images) of the near groups dissolved."""
    uf = UnionFind(len(digests))
    edges: list[Edge] = []
    by_digest: dict[str, list[int]] = defaultdict(list)
    for i, digest in enumerate(digests):
        by_digest[digest].append(i)
    for first, *copies in by_digest.values():
        for j in copies:
            uf.union(first, j)
            edges.append(Edge(first, j, "exact", 0.0))
    reps = sorted(members[0] for members in by_digest.values())  # one image per distinct content
    packed = np.stack([thumbs[i] for i in reps]) if reps else np.zeros((0, _N), np.uint8)
    near = [(reps[a], reps[b], d) for a, b, d in near_pairs(packed, max_difference)]
    chains = UnionFind(len(digests))
    for a, b, _ in near:
        chains.union(a, b)
    per_class = Counter(classes[i] for i in reps)
    dissolved = {root for root, members in chains.groups(reps).items() if _swallows(members, classes, per_class)}
    for a, b, d in near:
        joined = chains.find(a) not in dissolved
        if joined:
            uf.union(a, b)
        edges.append(Edge(a, b, "near", d, joined))
    sizes = sorted((len(m) for root, m in chains.groups(reps).items() if root in dissolved), reverse=True)
    return edges, uf, sizes
