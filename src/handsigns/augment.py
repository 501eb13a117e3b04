"""Training-time augmentation: a different random draw per sample, vectorised over the batch, on any device.

Every draw comes from the CPU generator ``gen``, and a transform that is off draws nothing, so switching one
on never changes the others' draws and a seed gives the same batches on every device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from handsigns.params import decided
from handsigns.params.recipe import TrainParams


def augment(x: torch.Tensor, gen: torch.Generator, params: TrainParams) -> torch.Tensor:
    """Random affine (zoom, shift, rotation, optional flip), colour jitter, hue rotation and random erasing, a
    different draw per sample; jitter, hue and erasing only when their knobs are above 0.

    ``x``: B x 3 x S x S float in [0, 1] on any device; random numbers come from the CPU generator ``gen``
    so a seed gives the same augmentation on every device.
    """
    b = x.shape[0]

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return (lo + (hi - lo) * torch.rand(b, generator=gen)).to(x.device)

    rotation = decided("train.max_rotation", params.max_rotation)
    angle = uniform(-rotation, rotation) * (math.pi / 180)
    scale = uniform(decided("train.min_scale", params.min_scale), 1.0)  # sample a window `scale` of the side: zoom in
    shift = 2 * decided("train.max_shift", params.max_shift)  # affine_grid coordinates span [-1, 1]
    tx, ty = uniform(-shift, shift), uniform(-shift, shift)
    flip = torch.ones(b, device=x.device)
    if params.flip:
        flip = torch.where(uniform(0, 1) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    j = params.color_jitter
    if j > 0:
        shape = (b, 1, 1, 1)
        bright, contrast, sat = (uniform(1 - j, 1 + j).view(shape) for _ in range(3))
        x = x * bright
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * contrast + mean
        grey = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
        x = (x - grey) * sat + grey
    if params.hue > 0:
        x = rotate_hue(x, uniform(-params.hue, params.hue) * (2 * math.pi))
    x = x.clamp_(0.0, 1.0)
    p_erase = decided("train.erase", params.erase)
    if p_erase > 0:
        x = erase(x, gen, p_erase)
    return x


# RGB to YIQ: luma and two chroma axes; a hue shift turns the chroma plane, keeping luma.
_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def rotate_hue(x: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Each image's hues turned by its ``angle`` (radians) around the grey axis; brightness kept."""
    cos, sin = torch.cos(angle), torch.sin(angle)
    one, zero = torch.ones_like(cos), torch.zeros_like(cos)
    turn = torch.stack(
        [torch.stack([one, zero, zero], 1), torch.stack([zero, cos, -sin], 1), torch.stack([zero, sin, cos], 1)], 1
    )
    yiq = _YIQ.to(x.device, x.dtype)
    m = torch.linalg.inv(yiq) @ turn.to(x.dtype) @ yiq  # B x 3 x 3
    return torch.einsum("bij,bjhw->bihw", m, x)


def erase(x: torch.Tensor, gen: torch.Generator, p: float) -> torch.Tensor:
    """Random erasing: with probability ``p`` per image, a rectangle of 2-25 % of the area (aspect 1:3 to 3:1)
    filled with uniform noise, so the label must be read from what is left."""
    b, _, h, w = x.shape

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen)

    area = (0.02 + 0.23 * rand(b)) * h * w
    aspect = torch.exp((rand(b) * 2 - 1) * math.log(3))
    eh = (area * aspect).sqrt().clamp(max=h).floor()
    ew = (area / aspect).sqrt().clamp(max=w).floor()
    top, left = (rand(b) * (h - eh + 1)).floor(), (rand(b) * (w - ew + 1)).floor()
    on = rand(b) < p
    rows = torch.arange(h).view(1, h)
    cols = torch.arange(w).view(1, w)
    inside_r = (rows >= top[:, None]) & (rows < (top + eh)[:, None])
    inside_c = (cols >= left[:, None]) & (cols < (left + ew)[:, None])
    mask = (inside_r[:, :, None] & inside_c[:, None, :] & on[:, None, None]).unsqueeze(1).to(x.device)
    return torch.where(mask, rand(*x.shape).to(x.device, x.dtype), x)


def mix(
    x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, params: TrainParams
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Mixup or CutMix of the batch with a shuffled copy of itself: (images, the second labels, the weight
    ``lam`` of the first). Each batch takes one of the two that are on (``train.mixup`` and ``train.cutmix``
    are their Beta(alpha, alpha) parameters; 0 = off); ``lam`` 1.0 when both are off."""
    kinds = [k for k in ("mixup", "cutmix") if getattr(params, k) > 0]
    if not kinds:
        return x, y, 1.0
    kind = kinds[int(torch.randint(len(kinds), (1,), generator=gen))]
    alpha = getattr(params, kind)
    lam = _beta(alpha, gen)
    perm = torch.randperm(len(y), generator=gen).to(y.device)
    if kind == "mixup":
        return x * lam + x[perm] * (1 - lam), y[perm], lam
    h, w = x.shape[2:]
    cut = math.sqrt(1 - lam)  # the pasted box's side, as a fraction: area 1 - lam
    bh, bw = int(h * cut), int(w * cut)
    top = int(torch.randint(h - bh + 1, (1,), generator=gen))
    left = int(torch.randint(w - bw + 1, (1,), generator=gen))
    x = x.clone()
    x[:, :, top : top + bh, left : left + bw] = x[perm, :, top : top + bh, left : left + bw]
    return x, y[perm], 1 - (bh * bw) / (h * w)


def _beta(alpha: float, gen: torch.Generator) -> float:
    """A Beta(alpha, alpha) draw from ``gen`` (torch's own Beta sampler takes no generator): X / (X + Y) of
    two Gamma(alpha) draws, each by the Marsaglia-Tsang method."""
    return (a := _gamma(alpha, gen)) / (a + _gamma(alpha, gen))


def _gamma(alpha: float, gen: torch.Generator) -> float:
    boost = 1.0
    if alpha < 1:  # Gamma(a) = Gamma(a + 1) * U^(1/a)
        boost = float(torch.rand(1, generator=gen)) ** (1 / alpha)
        alpha += 1
    d = alpha - 1 / 3
    c = 1 / math.sqrt(9 * d)
    while True:
        z = float(torch.randn(1, generator=gen))
        v = (1 + c * z) ** 3
        if v > 0 and math.log(float(torch.rand(1, generator=gen))) < 0.5 * z * z + d - d * v + d * math.log(v):
            return d * v * boost
