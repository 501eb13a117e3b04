"""Duplicate search: which images are copies of which, and the groups the copies join into.

Exact copies share a sha256 (grouped in O(N)). Near copies are searched among one image per distinct content:
their 256-bit difference hashes (:func:`handsigns.imaging.dhash`) differ in at most ``d`` bits, ``d`` being
:func:`max_distance` of ``data.near_duplicate_similarity`` (0.93: 17). Union-find joins both kinds of pairs
into groups, each rooted at its first image (the smallest index).

Algorithm, multi-index hashing: the hash's bits are dealt into ``d + 1`` disjoint chunks. Two hashes within
distance ``d`` agree exactly on at least one chunk (pigeonhole), so sorting the hashes by each chunk and
comparing only those that share a chunk value finds every pair an all-pairs search finds. The chunks are
interleaved (bit k goes to chunk k mod (d + 1)): neighbouring bits come from neighbouring pixels and agree
more often than chance, which would crowd contiguous chunks into few values.

Cost: ``d + 1`` sorts, O((d + 1) N log N), plus one Hamming distance per candidate pair (a pair sharing a
chunk value). Hashes with independent, uniform bits would give N^2/2 * sum over chunks of 2^-(chunk bits)
candidates; for d = 17 (18 chunks of 14 or 15 bits) that is N^2 / 2048. Real images' bits are correlated, so
they share chunks more often: ``bench/split_scaling.py`` measures 278,776 candidates, 0.28 M, at N = 20,000
generated images (1.4 times the independent figure, of 200 M pairs), and the 1,144 distinct SIGNS photos,
alike in framing, give 7,340 (11 times theirs). The search stays small next to decoding the images (one
decode each) up to about 10^5 images; past that, a higher similarity (fewer, longer chunks) or an
approximate-nearest-neighbour index is the next step.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from handsigns.imaging import HASH_BITS, hamming

_BLOCK = 1 << 20  # candidate pairs per distance computation: bounded memory


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


def max_distance(similarity: float) -> int:
    """The most differing hash bits two near copies may have at ``similarity`` (0.93: 17 of 256)."""
    return int(np.floor((1.0 - similarity) * HASH_BITS + 1e-9))


def similarity(distance: int) -> float:
    """The similarity of two hashes ``distance`` bits apart, as the duplicates table reports it."""
    return round(1 - distance / HASH_BITS, 4)


def hash_chunks(nbits: int, max_dist: int) -> list[np.ndarray]:
    """The bit positions of each of the ``max_dist + 1`` interleaved chunks (bit k in chunk k mod m)."""
    m = min(max_dist + 1, nbits)
    return [np.arange(k, nbits, m) for k in range(m)]


def _shared_chunk_pairs(keys: np.ndarray) -> list[np.ndarray]:
    """Pairs of rows of ``keys`` (one row of uint64 words per image) whose rows are equal, as arrays of pairs."""
    n = len(keys)
    order = np.lexsort(keys.T[::-1])
    sk = keys[order]
    new_run = np.ones(n, dtype=bool)
    new_run[1:] = np.any(sk[1:] != sk[:-1], axis=1)
    starts = np.flatnonzero(new_run)
    sizes = np.diff(np.append(starts, n))
    found = []
    for size in np.unique(sizes[sizes > 1]):  # all runs of one size at once
        runs = order[starts[sizes == size][:, None] + np.arange(size)]  # runs x size
        a, b = np.triu_indices(size, 1)
        found.append(np.stack([runs[:, a].ravel(), runs[:, b].ravel()], 1))
    return found


def candidate_pairs(bits: np.ndarray, max_dist: int) -> np.ndarray:
    """Distinct pairs ``(i, j)``, ``i < j``, of rows of unpacked ``bits`` that agree exactly on at least one
    chunk (every pair within ``max_dist`` does)."""
    found = []
    for cols in hash_chunks(bits.shape[1], max_dist):
        keys = np.packbits(bits[:, cols], axis=1)
        keys = np.pad(keys, ((0, 0), (0, 8 - keys.shape[1] % 8 if keys.shape[1] % 8 else 0)))
        found += _shared_chunk_pairs(np.ascontiguousarray(keys).view(np.uint64))
    if not found:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = np.sort(np.concatenate(found), axis=1).astype(np.int64)
    return np.unique(pairs, axis=0)


def near_pairs(hashes: np.ndarray, max_dist: int) -> list[tuple[int, int, int]]:
    """Pairs ``(i, j, distance)``, ``i < j``, of packed ``hashes`` with Hamming distance <= ``max_dist``, in
    ``(i, j)`` order, by multi-index hashing (the module's docstring: how, and what it costs)."""
    if len(hashes) < 2:
        return []
    pairs = candidate_pairs(np.unpackbits(hashes, axis=1), max_dist)
    out: list[tuple[int, int, int]] = []
    for block in range(0, len(pairs), _BLOCK):
        p = pairs[block : block + _BLOCK]
        dist = hamming(hashes[p[:, 0]], hashes[p[:, 1]])
        keep = dist <= max_dist
        out.extend((int(i), int(j), int(d)) for (i, j), d in zip(p[keep], dist[keep], strict=True))
    return out


@dataclass(frozen=True)
class Edge:
    """Image ``a`` and a later image ``b`` are copies: ``exact`` (same bytes) or ``near`` (similar hashes)."""

    a: int
    b: int
    kind: str
    distance: int  # differing hash bits; 0 for exact copies


def find_duplicates(
    digests: Sequence[str], hashes: Sequence[np.ndarray], max_dist: int
) -> tuple[list[Edge], UnionFind]:
    """Copies among images ``0..n-1`` given their sha256 ``digests`` and packed ``hashes``: the exact edges
    (each to the first image of its content), then the near ones (between the first images of two contents
    within ``max_dist``), and the groups both join into."""
    uf = UnionFind(len(digests))
    edges: list[Edge] = []
    by_digest: dict[str, list[int]] = defaultdict(list)
    for i, digest in enumerate(digests):
        by_digest[digest].append(i)
    for first, *copies in by_digest.values():
        for j in copies:
            uf.union(first, j)
            edges.append(Edge(first, j, "exact", 0))
    reps = sorted(members[0] for members in by_digest.values())  # one image per distinct content
    packed = np.stack([hashes[i] for i in reps]) if reps else np.zeros((0, HASH_BITS // 8), np.uint8)
    for a, b, d in near_pairs(packed, max_dist):
        uf.union(reps[a], reps[b])
        edges.append(Edge(reps[a], reps[b], "near", d))
    return edges, uf
