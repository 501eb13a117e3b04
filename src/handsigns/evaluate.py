"""Evaluate the best model on val and test: exact metrics, per-sample predictions, a misclassified gallery."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from handsigns import calibration
from handsigns.checkpoint import score
from handsigns.dataset import Split
from handsigns.files import atomic_path
from handsigns.metrics import report
from handsigns.model import Classifier


def evaluate_split(
    model: Classifier, split: Split, classes: list[str], batch_size: int
) -> tuple[dict, pd.DataFrame, pd.DataFrame, np.ndarray]:
    """(headline metrics, per-class table, per-image predictions, log-probabilities) of ``model`` on ``split``,
    scored on the CPU in fp32 through the exported model's own forward (uint8 pixels in)."""
    logprobs = score(model, split.images, batch_size)
    loss = F.nll_loss(logprobs, split.labels, reduction="sum").item() / max(len(split), 1)
    probs = logprobs.exp()
    preds = probs.argmax(1)
    labels = split.labels.numpy()
    metrics, per_class = report(labels, preds.numpy(), classes, loss)
    metrics["ece"] = calibration.ece(probs.numpy(), labels)
    table = pd.DataFrame(
        {
            "path": split.paths,
            "actual": [classes[i] for i in labels],
            "predicted": [classes[i] for i in preds.tolist()],
            "probability": probs.max(1).values.numpy().round(6),
        }
    )
    return metrics, per_class, table, logprobs.numpy()


def calibrate(
    val: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]
) -> tuple[dict, dict[str, pd.DataFrame]]:
    """Temperature scaling fitted on ``val`` (log-probabilities, labels), judged on ``test``: the summary for
    metrics/eval.json (the temperature, test ECE after it) and the reliability tables of test before and after."""
    temperature = calibration.fit_temperature(*val)
    logprobs, labels = test
    before, after = np.exp(logprobs), np.exp(calibration.scale(logprobs, temperature))
    summary = {"temperature": temperature, "test_ece": calibration.ece(after, labels)}
    tables = {
        "reliability_test": calibration.reliability(before, labels),
        "reliability_test_calibrated": calibration.reliability(after, labels),
    }
    return summary, tables


def gallery(table: pd.DataFrame, images: torch.Tensor, path: Path, columns: int = 6) -> None:
    """Write a PNG grid of the misclassified images (true / predicted / probability).

    ``images`` (N x 3 x S x S uint8, row-aligned with ``table``) are the pixels the model saw: nothing is
    decoded again."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wrong_rows = np.flatnonzero((table["actual"] != table["predicted"]).to_numpy())
    wrong = table.iloc[wrong_rows].reset_index(drop=True)
    n = len(wrong)
    rows = max(1, -(-n // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.8, rows * 2.0 + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, row in wrong.iterrows():
        ax = axes.flat[i]
        ax.imshow(images[wrong_rows[i]].permute(1, 2, 0).numpy())
        ax.set_title(
            f"true {row['actual']} / pred {row['predicted']}\np={row['probability']:.2f}", fontsize=8, color="darkred"
        )
    fig.suptitle(f"misclassified test images: {n} of {len(table)}", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80, metadata={"Software": None})
    plt.close(fig)
