"""How far to trust the model's probabilities: expected calibration error, reliability tables, and temperature
scaling (Guo et al., 2017) fitted on val.

A model is calibrated when, of the images it labels with confidence p, a fraction p is right. Training with
label smoothing (the default) makes it under-confident; a long run on few images, over-confident. Temperature
scaling divides the log-probabilities by one number T fitted to minimise the val negative log-likelihood: the
labels (the argmax) never change, only how sure the probabilities say the model is. Pure NumPy, float64: the
torch-free predict path applies it too (:func:`scale`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

BINS = 15  # equal-width confidence bins, as in Guo et al.: the field's usual ECE
T_RANGE = (0.05, 20.0)  # searched; a T at either end means broken scores, not merely miscalibrated ones
_STEPS = 200  # golden-section steps on log T: the bracket shrinks by 0.618 each, far below float64 resolution


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def scale(logprobs: np.ndarray, temperature: float) -> np.ndarray:
    """Log-probabilities with temperature ``temperature``: log_softmax(log p / T), in float64. Equal to scaling
    the logits, since log p differs from them by a per-image constant, which softmax ignores."""
    return _log_softmax(np.asarray(logprobs, dtype=np.float64) / temperature)


def log_of(probs: np.ndarray) -> np.ndarray:
    """Log-probabilities from probabilities (an exported model's output), a zero taken as the smallest float64:
    a class the model rules out stays ruled out at any temperature."""
    return np.log(np.maximum(np.asarray(probs, dtype=np.float64), np.finfo(np.float64).tiny))


def nll(logprobs: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``labels`` at ``temperature``."""
    scaled = scale(logprobs, temperature)
    return float(-scaled[np.arange(len(labels)), labels].mean())


def fit_temperature(logprobs: np.ndarray, labels: np.ndarray) -> float:
    """The T in :data:`T_RANGE` that minimises the NLL of ``labels`` (val), to 6 significant digits.

    The NLL is convex in 1/T, so unimodal in log T: golden-section search finds its minimum without gradients
    or a random start, the same T on every machine for the same scores."""
    if len(labels) == 0:
        raise ValueError("no images to fit a temperature on")
    lo, hi = math.log(T_RANGE[0]), math.log(T_RANGE[1])
    ratio = (math.sqrt(5) - 1) / 2

    def f(log_t: float) -> float:
        return nll(logprobs, labels, math.exp(log_t))

    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = f(a), f(b)
    for _ in range(_STEPS):
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = f(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = f(b)
        if hi - lo < 1e-12:
            break
    return float(f"{math.exp((lo + hi) / 2):.6g}")


def _binned(probs: np.ndarray, labels: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each image's top probability, whether its argmax is right, and its bin: (i/bins, (i+1)/bins], the first
    bin also holding 0."""
    probs = np.asarray(probs, dtype=np.float64)
    confidence = probs.max(axis=1)
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    return confidence, probs.argmax(axis=1) == np.asarray(labels), index


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> pd.DataFrame:
    """The reliability diagram's table: per bin with images in it, its range, the images' mean confidence,
    their accuracy and their count."""
    import pandas as pd  # here: the predict-only install (scale, log_of) has no pandas

    confidence, right, index = _binned(probs, labels, bins)
    rows = [
        {
            "bin": f"{i / bins:.3f}-{(i + 1) / bins:.3f}",
            "confidence": round(float(confidence[index == i].mean()), 6),
            "accuracy": round(float(right[index == i].mean()), 6),
            "count": int((index == i).sum()),
        }
        for i in range(bins)
        if (index == i).any()
    ]
    return pd.DataFrame(rows, columns=["bin", "confidence", "accuracy", "count"])


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float:
    """Expected calibration error: the count-weighted mean |accuracy - confidence| over the bins, 0 to 1."""
    confidence, right, index = _binned(probs, labels, bins)
    gap = sum(abs(right[index == i].sum() - confidence[index == i].sum()) for i in range(bins))
    return round(float(gap / max(len(confidence), 1)), 6)
