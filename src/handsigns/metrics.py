"""Classification metrics computed exactly, per sample (never averaged over batches)."""

from __future__ import annotations

import numpy as np


def confusion(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """``m[i, j]`` = number of samples of class i predicted as j."""
    return np.bincount(labels * num_classes + preds, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den else 0.0


def report(labels: np.ndarray, preds: np.ndarray, classes: list[str], loss: float) -> dict:
    """accuracy, loss, macro-F1 and per-class precision/recall/F1/support; floats rounded to 6 places."""
    m = confusion(labels, preds, len(classes))
    tp = np.diag(m)
    per_class = {}
    f1s = []
    for k, name in enumerate(classes):
        precision = _ratio(tp[k], m[:, k].sum())
        recall = _ratio(tp[k], m[k, :].sum())
        f1 = _ratio(2 * precision * recall, precision + recall)
        f1s.append(f1)
        per_class[name] = {"precision": round(precision, 6), "recall": round(recall, 6), "f1": round(f1, 6),
                           "support": int(m[k, :].sum())}
    return {
        "images": len(labels),
        "accuracy": round(_ratio(tp.sum(), len(labels)), 6),
        "errors": int(len(labels) - tp.sum()),
        "loss": round(loss, 6),
        "macro_f1": round(float(np.mean(f1s)), 6),
        "per_class": per_class,
    }
