"""The duplicate search (handsigns.neardup) on its own: against brute force, on thumbnails made to order."""

from __future__ import annotations

import numpy as np
import pytest

from handsigns.imaging import THUMB_SIZE
from handsigns.neardup import Edge, UnionFind, detail, difference, find_duplicates, near_pairs

N = THUMB_SIZE * THUMB_SIZE


def planted(seed: int, n: int = 300, step: int = 7, most: float = 0.06) -> np.ndarray:
    """``n`` random thumbnails; every ``step``-th one's successor a copy with noise of 0 to ``most`` RMS and a
    brightness offset, so pairs fall on both sides of the limits tested."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (n, N)).astype(np.float64)
    base = np.clip(base * rng.uniform(0.05, 1, (n, 1)) + rng.uniform(0, 128, (n, 1)), 0, 255)  # low contrast too
    for k in range(0, n - 1, step):
        noise = rng.normal(0, rng.uniform(0, most) * 255, N) + rng.uniform(-20, 20)
        base[k + 1] = np.clip(base[k] + noise, 0, 255)
    return base.round().astype(np.uint8)


def brute_pairs(thumbs: np.ndarray, max_difference: float) -> list[tuple[int, int, float]]:
    """Every pair ``i < j`` within ``max_difference``, in order, from all the differences taken directly."""
    i, j = np.triu_indices(len(thumbs), 1)
    d = thumbs[i].astype(float) - thumbs[j].astype(float)
    rms = np.sqrt(np.mean((d - d.mean(1, keepdims=True)) ** 2, axis=1)) / 255
    details = np.array([detail(t) for t in thumbs])
    keep = (rms <= max_difference) & (rms <= 0.3 * np.sqrt((details[i] ** 2 + details[j] ** 2) / 2))
    return [(int(a), int(b), difference(thumbs[a], thumbs[b])) for a, b in zip(i[keep], j[keep], strict=True)]


def test_difference_ignores_a_brightness_offset_and_is_symmetric():
    a = np.random.default_rng(0).integers(20, 200, N).astype(np.uint8)
    assert difference(a, a) == 0 and difference(a, a + 40) == 0  # a brighter copy is the same picture
    b = a.copy()
    b[::2] += 10  # half the values up by 10 grey levels: RMS 5 levels once the mean is removed
    assert difference(a, b) == difference(b, a) == round(5 / 255, 4)


@pytest.mark.parametrize("max_difference", [0.0, 0.01, 0.03, 0.05])
def test_near_pairs_equals_brute_force(max_difference):
    base = planted(int(max_difference * 100), n=200)
    got = near_pairs(base, max_difference)
    brute = brute_pairs(base, max_difference)
    assert got == brute
    assert len(brute) >= 5 if max_difference >= 0.03 else True


def test_near_pairs_across_tiles(monkeypatch):
    """Pairs whose rows and columns fall in different tiles are found, as with one tile."""
    base = planted(7, n=120, step=3)
    whole = near_pairs(base, 0.04)
    monkeypatch.setattr("handsigns.neardup._TILE", 16)
    assert near_pairs(base, 0.04) == whole and len(whole) >= 10


def test_the_limits_are_inclusive_and_exact():
    a = np.tile([40, 200], N // 2).astype(np.uint8)  # contrast: 80 grey levels
    b = a.copy()
    b[: N // 2] += 15  # RMS 7.5 grey levels after the mean is removed: 0.0294 of the range
    exactly = 7.5 / 255
    assert near_pairs(np.stack([a, b]), exactly) == [(0, 1, round(exactly, 4))]
    assert near_pairs(np.stack([a, b]), exactly * (1 - 1e-6)) == []
    c = a.copy()
    c[: N // 2] += 20  # 10 grey levels apart, an eighth of their contrast (80 levels)
    faint = np.tile([100, 130], N // 2).astype(np.uint8)  # detail 15 levels: 0.3 of it is 4.5
    f2 = faint.copy()
    f2[: N // 2] += 10  # 5 grey levels apart, 0.0196 of the range: under the absolute limit, over the relative
    assert near_pairs(np.stack([a, c]), 0.05) == [(0, 1, round(10 / 255, 4))]
    assert near_pairs(np.stack([faint, f2]), 0.05) == []


def test_detail_is_what_varies_beyond_a_plane():
    rows, cols = np.mgrid[0:THUMB_SIZE, 0:THUMB_SIZE]
    plane = 40 + 5 * cols + 3 * rows  # an even lighting gradient: no detail
    assert detail(plane.astype(np.uint8).ravel()) == pytest.approx(0, abs=1e-9)
    checks = plane + np.where((rows + cols) % 2, 10, -10)  # +-10 levels on top
    assert detail(checks.astype(np.uint8).ravel()) == pytest.approx(10 / 255, rel=1e-3)


def test_a_small_mark_on_a_gradient_is_not_a_copy_of_another():
    """Two different small marks on the same graded background: close in absolute terms, and the gradient gives
    them contrast, but their detail is the marks alone, which differ wholly. A brighter copy is still a copy."""
    cols = np.mgrid[0:THUMB_SIZE, 0:THUMB_SIZE][1]
    ground = 40 + 8 * cols  # a ramp of 120 grey levels across
    a, b = ground.copy(), ground.copy()
    a[3:5, 3:5] += 30  # a 2 x 2 mark: a letter a tenth of the image's height, at 16 px
    b[10:12, 11:13] += 30  # another, elsewhere
    a, b = a.astype(np.uint8).ravel(), b.astype(np.uint8).ravel()
    rms = difference(a, b)
    contrast = np.sqrt((a.astype(float).var() + b.astype(float).var()) / 2) / 255
    assert rms <= 0.03 and rms <= contrast / 4  # the rule before this one called them the same picture
    assert near_pairs(np.stack([a, b]), 0.03) == []
    assert near_pairs(np.stack([a, a + 20]), 0.03) == [(0, 1, 0.0)]


def test_near_pairs_of_fewer_than_two_thumbnails():
    assert near_pairs(np.zeros((0, N), np.uint8), 0.03) == []
    assert near_pairs(np.zeros((1, N), np.uint8), 0.03) == []


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
    thumbs = list(planted(2, n=60, step=5))
    digests = [f"content {i}" for i in range(60)]
    for copy, of in [(10, 3), (11, 3), (40, 0), (59, 41)]:  # exact copies: the same bytes, so the same pixels
        digests[copy], thumbs[copy] = digests[of], thumbs[of]
    classes = [f"c{i % 3}" for i in range(60)]
    edges, uf, dissolved = find_duplicates(digests, thumbs, classes, 0.03)

    exact = [e for e in edges if e.kind == "exact"]
    assert exact == [
        Edge(0, 40, "exact", 0.0),
        Edge(3, 10, "exact", 0.0),
        Edge(3, 11, "exact", 0.0),
        Edge(41, 59, "exact", 0.0),
    ]
    firsts = [i for i in range(60) if i not in (10, 11, 40, 59)]  # one image per content
    near = [(e.a, e.b, e.difference) for e in edges if e.kind == "near"]
    packed = np.stack([thumbs[i] for i in firsts])
    assert near == [(firsts[a], firsts[b], d) for a, b, d in brute_pairs(packed, 0.03)] and near
    assert edges == exact + [e for e in edges if e.kind == "near"]  # exact first, then near
    assert dissolved == [] and all(e.joined for e in edges)

    groups = components(60, [(e.a, e.b) for e in edges])
    assert sorted(map(sorted, uf.groups(range(60)).values())) == sorted(map(sorted, groups))
    assert all(uf.find(i) == min(g) for g in groups for i in g)


def test_a_chain_of_look_alikes_that_swallows_a_class_is_dissolved_not_joined():
    """Class a: 6 images, each a small step from the last, so near pairs chain all of them; class b: one pair
    of copies. The chain holds more than half of class a, so it is reported but not joined; b's pair is."""
    rng = np.random.default_rng(3)
    start = rng.integers(60, 190, N).astype(np.float64)
    chain = [start + steps for steps in np.cumsum(rng.normal(0, 5, (6, N)), axis=0)]  # a walk: 0.02 a step
    other = rng.integers(0, 256, N).astype(np.float64)
    thumbs = [
        np.clip(t, 0, 255).round().astype(np.uint8) for t in [*chain, other, other + 1, *rng.integers(0, 256, (4, N))]
    ]
    classes = ["a"] * 6 + ["b"] * 6
    edges, uf, dissolved = find_duplicates([str(i) for i in range(12)], thumbs, classes, 0.03)
    chained = [e for e in edges if e.a < 6]
    assert len(chained) >= 5 and not any(e.joined for e in chained)
    assert dissolved == [6]
    assert [(e.a, e.b, e.joined) for e in edges if e.a >= 6] == [(6, 7, True)]
    assert len({uf.find(i) for i in range(6)}) == 6 and uf.find(7) == 6


def test_find_duplicates_of_nothing():
    edges, uf, dissolved = find_duplicates([], [], [], 0.03)
    assert edges == [] and uf.groups([]) == {} and dissolved == []
