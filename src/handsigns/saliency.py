"""Where the model looks: occlusion sensitivity (Zeiler and Fergus, 2014) through the exported model.

Cover one square of the image at a time with the image's own mean colour and measure how much the evidence for
the predicted class falls (its log-odds: a probability saturates at 1 on a confident model, its log-odds do
not): where covering hurts most, the model was looking. It needs forward passes only,
so it runs on ONNX Runtime with NumPy (the torch-free predict path) and on any architecture; a 64 px image
takes 225 passes (an 8 px square every 4 px), one batch. A map that lights up the background instead of the
hand says the model learnt the background (every "3" shot on the same table).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from PIL import Image

CHUNK = 256  # occluded copies per forward pass


class Scorer(Protocol):  # handsigns.predict.Predictor, which imports this module
    def log_probabilities(self, pixels: np.ndarray) -> np.ndarray: ...


def windows(side: int, patch: int, stride: int) -> list[int]:
    """Top-left corners along one side: every ``stride`` pixels, the last square flush with the edge."""
    starts = list(range(0, side - patch + 1, stride))
    return starts if starts[-1] == side - patch else [*starts, side - patch]


def log_odds(logprobs: np.ndarray, target: int) -> np.ndarray:
    """log p / (1 - p) of class ``target`` per row, from log-probabilities, without forming 1 - p."""
    others = np.delete(logprobs, target, axis=1)
    top = others.max(axis=1)
    return logprobs[:, target] - (top + np.log(np.exp(others - top[:, None]).sum(axis=1)))


def occlusion(predictor: Scorer, pixels: np.ndarray, target: int | None = None) -> tuple[np.ndarray, int]:
    """(map, target): for ``pixels`` (S x S x 3 uint8, as the model takes them), how much covering each pixel
    lowers the log-odds of class ``target`` (default: the predicted one), averaged over the squares that
    cover it; S x S float in [0, 1], 1 at the most important place (all 0 when nothing matters)."""
    side = pixels.shape[0]
    patch = max(2, side // 8)
    stride = max(1, patch // 2)
    base = predictor.log_probabilities(pixels[None])
    target = int(np.argmax(base[0])) if target is None else target
    evidence = log_odds(base, target)[0]
    fill = pixels.reshape(-1, 3).mean(0).round().astype(np.uint8)  # removes what is there, not the brightness
    corners = [(y, x) for y in windows(side, patch, stride) for x in windows(side, patch, stride)]
    drops = []
    for start in range(0, len(corners), CHUNK):
        batch = np.repeat(pixels[None], len(corners[start : start + CHUNK]), axis=0)
        for i, (y, x) in enumerate(corners[start : start + CHUNK]):
            batch[i, y : y + patch, x : x + patch] = fill
        drops.append(evidence - log_odds(predictor.log_probabilities(batch), target))
    heat, cover = np.zeros((side, side)), np.zeros((side, side))
    for (y, x), drop in zip(corners, np.concatenate(drops), strict=True):
        heat[y : y + patch, x : x + patch] += max(float(drop), 0.0)
        cover[y : y + patch, x : x + patch] += 1
    heat /= cover
    top = heat.max()
    return (heat / top if top > 0 else heat), target


def heatmap(pixels: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """``pixels`` under their map (transparent where 0, through red to yellow at 1): S x S x 3 uint8."""
    h = heat[..., None]
    hot = np.concatenate([np.clip(2 * h, 0, 1), np.clip(2 * h - 1, 0, 1), np.zeros_like(h)], axis=2) * 255
    alpha = 0.65 * h
    return (pixels * (1 - alpha) + hot * alpha).round().astype(np.uint8)


def overlay(pixels: np.ndarray, heat: np.ndarray, scale: int = 4) -> Image.Image:
    """The image and the image under its map (:func:`heatmap`), side by side, ``scale`` times enlarged
    (nearest: the pixels the model saw)."""
    gap = np.full((pixels.shape[0], 2, 3), 255, np.uint8)
    image = Image.fromarray(np.concatenate([pixels, gap, heatmap(pixels, heat)], axis=1))
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
