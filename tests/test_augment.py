"""Training-time augmentation (handsigns.augment): random erasing, Mixup and CutMix on their own."""

from __future__ import annotations

import math

import pytest
import torch

from handsigns.augment import _beta, augment, mix, rotate_hue
from handsigns.params.recipe import TrainParams


def P(**kw) -> TrainParams:
    """Train params with the auto knobs at their strength-0 values (handsigns.adapt), ``kw`` over them."""
    return TrainParams(**{"max_rotation": 10.0, "min_scale": 0.9, "max_shift": 0.05, "erase": 0.0, **kw})


def batch(b: int = 16, side: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand(b, 3, side, side, generator=torch.Generator().manual_seed(1)), torch.arange(b) % 4


def test_erasing_replaces_one_rectangle_per_image_and_nothing_else():
    x, _ = batch()
    plain = augment(x, torch.Generator().manual_seed(0), P(erase=0.0))
    erased = augment(x, torch.Generator().manual_seed(0), P(erase=1.0))  # the same draws, then erasing
    for a, b in zip(plain, erased, strict=True):
        changed = (a != b).any(0)
        rows, cols = changed.any(1).nonzero(), changed.any(0).nonzero()
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert changed.sum() == box  # a filled rectangle (noise equal to a pixel by chance: never, in floats)
        assert 0.02 * 32 * 32 * 0.5 <= box <= 0.25 * 32 * 32  # 2-25 % of the area, floored to whole pixels


def test_transforms_that_are_off_draw_nothing():
    x, y = batch()
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    assert mix(x, y, gen, P()) == (x, y, 1.0)
    assert torch.equal(gen.get_state(), state)
    augment(x, gen, P(erase=0.0))
    after_plain = gen.get_state()
    gen.set_state(state)
    augment(x, gen, P(erase=0.5))
    assert not torch.equal(gen.get_state(), after_plain)  # erasing draws after everything else


def test_mixup_blends_each_image_with_another_at_the_weight_it_returns():
    x, y = batch()
    mixed, y2, lam = mix(x, y, torch.Generator().manual_seed(3), P(mixup=0.4))
    assert 0 < lam < 1
    perm = [int((y == label).nonzero()[0]) for label in y2]  # some image of each second label
    assert all(y2 == y[perm])
    # every mixed image is lam x its own + (1 - lam) x the one its second label came from
    partner = [
        min(range(16), key=lambda j, i=i: float((mixed[i] - lam * x[i] - (1 - lam) * x[j]).abs().max()))
        for i in range(16)
    ]
    assert torch.allclose(mixed, lam * x + (1 - lam) * x[partner], atol=1e-6)
    assert all(y2 == y[partner])


def test_cutmix_pastes_one_box_and_weighs_the_labels_by_its_area():
    x, y = batch()
    mixed, _, lam = mix(x, y, torch.Generator().manual_seed(5), P(cutmix=1.0))
    changed = (mixed != x).any(1).any(0)  # pixels changed in any image
    rows, cols = changed.any(1).nonzero(), changed.any(0).nonzero()
    area = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    assert lam == pytest.approx(1 - float(area) / (32 * 32))
    assert changed.sum() == area


def test_both_on_takes_each_in_turn_and_repeats_with_the_seed():
    x, y = batch()
    params = P(mixup=0.2, cutmix=1.0)
    runs = []
    for _ in range(2):
        gen = torch.Generator().manual_seed(11)
        runs.append([mix(x, y, gen, params) for _ in range(12)])
    kinds = {"cutmix" if ((m != x).sum(1) == 0).any() else "mixup" for m, _, _ in runs[0]}
    assert kinds == {"mixup", "cutmix"}
    for (m1, y1, l1), (m2, y2, l2) in zip(*runs, strict=True):
        assert torch.equal(m1, m2) and torch.equal(y1, y2) and l1 == l2


@pytest.mark.parametrize("alpha", [0.2, 1.0, 3.0])
def test_beta_draws_have_the_beta_mean_and_spread(alpha):
    gen = torch.Generator().manual_seed(0)
    draws = torch.tensor([_beta(alpha, gen) for _ in range(4000)], dtype=torch.float64)
    assert ((draws >= 0) & (draws <= 1)).all()
    assert float(draws.mean()) == pytest.approx(0.5, abs=0.02)
    var = 1 / (4 * (2 * alpha + 1))  # Beta(a, a)
    assert float(draws.var()) == pytest.approx(var, rel=0.1)


def test_a_hue_turn_keeps_brightness_and_grey_and_a_full_turn_is_no_turn():
    x, _ = batch(4, 8)
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    turned = rotate_hue(x, torch.tensor([0.5, 1.0, 2.0, 3.0]))
    assert torch.allclose((turned * luma).sum(1), (x * luma).sum(1), atol=1e-5)  # brightness kept
    assert not torch.allclose(turned, x, atol=1e-2)
    assert torch.allclose(rotate_hue(x, torch.full((4,), 2 * math.pi)), x, atol=1e-5)
    grey = x.mean(1, keepdim=True).expand(-1, 3, -1, -1)
    assert torch.allclose(rotate_hue(grey, torch.ones(4)), grey, atol=1e-5)  # grey has no hue to turn
