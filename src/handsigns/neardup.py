"""Duplicate search: which images are copies of which, and the groups the copies join into.

Exact copies share a sha256 (grouped in O(N)). Near copies are compared in pixel space, one image per distinct
content: two images are the same picture when their 16x16 grey thumbnails (:func:`handsigns.imaging.thumbnail`)
differ by at most ``data.near_duplicate_max_difference`` (0.03) in root-mean-square, as a fraction of the grey
range, once the mean difference (a brightness offset) is taken out (:func:`difference`), and by at most a
quarter of their own contrast (the standard deviation of their grey levels): a faint shape on a plain
background changes few grey levels, so two different ones can be close in absolute terms but not relative to
how little the images vary.

Why pixels and not a perceptual hash (this module used a 256-bit difference hash until issue 21): the hash
both missed copies and invented them. On the 64 px SIGNS photos it missed most re-encodes (a JPEG at quality 50
or a half-size copy was within its 17-bit threshold 37 % and 40 % of the time), and on 1,797 small scans of
handwritten digits it called 13,190 pairs of distinct images "the same": a low-detail image has few informative
gradients, so two writings of a "1" hash alike. Measured on those two sets and on copies made to order
(``docs/data.md``): re-encodes and resizes differ by at most 0.009, a quarter-size copy by 0.021, a 10 %
brightness or contrast change by 0.023, SIGNS' burst shots (consecutive photo numbers) by 0.012 to 0.03, and
the closest two distinct digits by 0.042. The limit sits between. Relative to contrast, SIGNS' burst shots
differ by at most 0.203 of it; generated low-contrast shapes and letters the absolute limit alone pairs
(thousands, most across classes) by at least 0.34.

The search is exact and machine-independent: thumbnails hold integers 0..255, so every dot product of two
(at most 256 x 255^2 < 2^24) is computed exactly in float32 whatever the order of the sums, and the test runs
on integers in float64 (all below 2^53). Candidates are pruned by the triangle inequality: the images are
sorted by the norm of their mean-removed thumbnail, and two whose norms differ by more than the limit cannot
be within it (this prunes little on images of similar contrast). Cost: about N^2 / 2 dot products of 256
values, in tiles of ``_TILE`` x ``_TILE`` (16 MB of float32), each tile screened in float32 and its few
survivors tested exactly: ``bench/split_scaling.py`` measures it against decoding the images (the search
overtakes decoding of small files between 10,000 and 20,000 images).

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
# A pair's difference must also be at most this fraction of the images' own contrast (the standard deviation of
# their thumbnails' grey levels, root-mean-square of the two); a power of two keeps the test exact.
_RELATIVE = 0.25


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
    spread = _N * sq - total * total  # N^2 x variance: the score's units
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
            near = (score <= limit) & (score <= _RELATIVE**2 * (spread[rows] + spread[cols]) / 2)
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
