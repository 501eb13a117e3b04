"""The duplicate search (handsigns.neardup) on its own: against brute force, on hashes made to order."""

from __future__ import annotations

import numpy as np
import pytest

from handsigns.imaging import HASH_BITS, hamming
from handsigns.neardup import (
    Edge,
    UnionFind,
    candidate_pairs,
    find_duplicates,
    hash_chunks,
    max_distance,
    near_pairs,
    similarity,
)

BYTES = HASH_BITS // 8


def planted(seed: int, n: int = 300, step: int = 7, most: int = 45) -> np.ndarray:
    """``n`` random packed hashes; every ``step``-th one's successor a copy with 0 to ``most`` bits flipped."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (n, BYTES), dtype=np.uint8)
    bits = np.unpackbits(base, axis=1)
    for k in range(0, n - 1, step):  # plant pairs at distances around the threshold
        flip = rng.choice(HASH_BITS, size=int(rng.integers(0, most)), replace=False)
        row = bits[k].copy()
        row[flip] ^= 1
        base[k + 1] = np.packbits(row)
    return base


def brute_pairs(hashes: np.ndarray, max_dist: int) -> list[tuple[int, int, int]]:
    """Every pair ``i < j`` within ``max_dist``, in order, from all the distances."""
    i, j = np.triu_indices(len(hashes), 1)
    dist = hamming(hashes[i], hashes[j])
    keep = dist <= max_dist
    return [(int(a), int(b), int(d)) for a, b, d in zip(i[keep], j[keep], dist[keep], strict=True)]


def test_max_distance_and_similarity():
    assert max_distance(0.93) == 17 and max_distance(1.0) == 0 and max_distance(0.5) == HASH_BITS // 2
    assert similarity(0) == 1.0 and similarity(17) == 0.9336 and similarity(HASH_BITS // 2) == 0.5
    assert all(similarity(d) >= 0.93 for d in range(max_distance(0.93) + 1))


@pytest.mark.parametrize("max_dist", [0, 3, 17, 40])
def test_near_pairs_equals_brute_force(max_dist):
    base = planted(max_dist)
    got = near_pairs(base, max_dist)
    brute = brute_pairs(base, max_dist)
    assert got == brute
    assert len(brute) >= 1 if max_dist >= 17 else True


def test_near_pairs_of_fewer_than_two_hashes():
    assert near_pairs(np.zeros((0, BYTES), np.uint8), 17) == []
    assert near_pairs(np.zeros((1, BYTES), np.uint8), 17) == []


def test_chunks_deal_every_bit_once():
    chunks = hash_chunks(HASH_BITS, 17)
    assert len(chunks) == 18 and sorted(len(c) for c in chunks) == [14] * 14 + [15] * 4
    assert sorted(np.concatenate(chunks).tolist()) == list(range(HASH_BITS))
    assert len(hash_chunks(8, 40)) == 8  # never more chunks than bits


def test_candidates_share_a_chunk_and_hold_every_near_pair():
    base = planted(1)
    bits = np.unpackbits(base, axis=1)
    pairs = candidate_pairs(bits, 17)
    chunks = hash_chunks(HASH_BITS, 17)
    assert all(any((bits[i, c] == bits[j, c]).all() for c in chunks) for i, j in pairs)
    assert {(i, j) for i, j, _ in brute_pairs(base, 17)} <= {(int(i), int(j)) for i, j in pairs}
    assert (pairs[:, 0] < pairs[:, 1]).all() and len(np.unique(pairs, axis=0)) == len(pairs)


def test_union_find_roots_are_the_smallest_members():
    uf = UnionFind(8)
    for i, j in [(5, 3), (7, 5), (2, 6), (6, 1)]:
        uf.union(i, j)
    assert [uf.find(i) for i in range(8)] == [0, 1, 1, 3, 4, 3, 1, 3]
    assert uf.groups([7, 6, 5, 4, 3, 2, 1, 0]) == {3: [7, 5, 3], 1: [6, 2, 1], 4: [4], 0: [0]}


def components(n: int, pairs: list[tuple[int, int]]) -> list[set[int]]:
    """The connected components of a graph, by search from each node (the slow way)."""
    adjacent: dict[int, set[int]] = {i: set() for i in range(n)}
    for i, j in pairs:
        adjacent[i].add(j)
        adjacent[j].add(i)
    seen: set[int] = set()
    found = []
    for start in range(n):
        if start not in seen:
            todo, group = [start], set()
            while todo:
                i = todo.pop()
                if i not in group:
                    group.add(i)
                    todo.extend(adjacent[i] - group)
            seen |= group
            found.append(group)
    return found


def test_find_duplicates_links_exact_copies_to_the_first_and_near_ones_between_contents():
    hashes = list(planted(2, n=60, step=5, most=30))
    digests = [f"content {i}" for i in range(60)]
    for copy, of in [(10, 3), (11, 3), (40, 0), (59, 41)]:  # exact copies: the same bytes, so the same hash
        digests[copy], hashes[copy] = digests[of], hashes[of]
    edges, uf = find_duplicates(digests, hashes, 17)

    exact = [e for e in edges if e.kind == "exact"]
    assert exact == [
        Edge(0, 40, "exact", 0),
        Edge(3, 10, "exact", 0),
        Edge(3, 11, "exact", 0),
        Edge(41, 59, "exact", 0),
    ]
    firsts = [i for i in range(60) if i not in (10, 11, 40, 59)]  # one image per content
    near = [(e.a, e.b, e.distance) for e in edges if e.kind == "near"]
    packed = np.stack([hashes[i] for i in firsts])
    assert near == [(firsts[a], firsts[b], d) for a, b, d in brute_pairs(packed, 17)] and near
    assert edges == exact + [e for e in edges if e.kind == "near"]  # exact first, then near

    groups = components(60, [(e.a, e.b) for e in edges])
    assert sorted(map(sorted, uf.groups(range(60)).values())) == sorted(map(sorted, groups))
    assert all(uf.find(i) == min(g) for g in groups for i in g)


def test_find_duplicates_of_nothing():
    edges, uf = find_duplicates([], [], 17)
    assert edges == [] and uf.groups([]) == {}
