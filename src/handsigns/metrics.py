"""Classification metrics computed exactly, per sample (never averaged over batches)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def confusion(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """``m[i, j]`` = number of samples of class i predicted as j."""
    return np.bincount(labels * num_classes + preds, minlength=num_classes**2).reshape(num_classes, num_classes)


def _ratios(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros(len(num)), where=den > 0)


def report(labels: np.ndarray, preds: np.ndarray, classes: list[str], loss: float) -> tuple[dict, pd.DataFrame]:
    """The headline figures (accuracy, macro-F1, loss: DVC metrics, few enough for one table row) and the
    per-class table (class, precision, recall, f1, support: a committed file and a plot). Rounded to 6 places."""
    m = confusion(labels, preds, len(classes))
    tp = np.diag(m).astype(float)
    precision, recall = _ratios(tp, m.sum(0)), _ratios(tp, m.sum(1))
    f1 = _ratios(2 * precision * recall, precision + recall)
    per_class = pd.DataFrame(
        {
            "class": classes,
            "precision": precision.round(6),
            "recall": recall.round(6),
            "f1": f1.round(6),
            "support": m.sum(1),
        }
    )
    headline = {
        "accuracy": round(float(tp.sum() / len(labels)) if len(labels) else 0.0, 6),
        "macro_f1": round(float(f1.mean()), 6),
        "loss": round(loss, 6),
    }
    return headline, per_class
