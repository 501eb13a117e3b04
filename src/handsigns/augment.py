"""Training-time augmentation: a different random draw per sample, vectorised over the batch, on any device."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from handsigns.params.recipe import TrainParams


def augment(x: torch.Tensor, gen: torch.Generator, params: TrainParams) -> torch.Tensor:
    """Random affine (zoom, shift, rotation, optional flip) and colour jitter, a different draw per sample.

    ``x``: B x 3 x S x S float in [0, 1] on any device; random numbers come from the CPU generator ``gen``
    so a seed gives the same augmentation on every device.
    """
    b = x.shape[0]

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return (lo + (hi - lo) * torch.rand(b, generator=gen)).to(x.device)

    angle = uniform(-params.max_rotation, params.max_rotation) * (math.pi / 180)
    scale = uniform(params.min_scale, 1.0)  # sample a window `scale` of the side: zoom in
    shift = 2 * params.max_shift  # affine_grid coordinates span [-1, 1]
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
    return x.clamp_(0.0, 1.0)
