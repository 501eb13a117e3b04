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


MAPPED = 60  # images per gallery that get an occlusion map (225 forward passes each at 64 px)
SAMPLE_PER_CLASS = 2  # correct test images per class in the "where it looks" gallery


class TorchScorer:
    """The trained network as :func:`handsigns.saliency.occlusion` scores images: S x S x 3 uint8 in,
    float64 log-probabilities out (the network's own; the map is the same shape at any temperature)."""

    def __init__(self, model: Classifier, batch_size: int) -> None:
        self.model, self.batch_size = model, batch_size

    def log_probabilities(self, pixels: np.ndarray) -> np.ndarray:
        batch = torch.from_numpy(np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)))
        return score(self.model, batch, self.batch_size).double().numpy()


def explained_rows(table: pd.DataFrame) -> dict[str, np.ndarray]:
    """Which rows of ``table`` each gallery shows: every misclassified image, and the first correct ones of
    each class (:data:`SAMPLE_PER_CLASS`)."""
    right = (table["actual"] == table["predicted"]).to_numpy()
    sample = table[right].groupby("actual", sort=False).head(SAMPLE_PER_CLASS).index.to_numpy()
    return {"misclassified": np.flatnonzero(~right), "correct": np.sort(sample)}


def caption(row: pd.Series) -> tuple[str, str]:
    """A gallery image's title and its colour: true / predicted / probability, red when wrong."""
    wrong = row["actual"] != row["predicted"]
    return (
        f"true {row['actual']} / pred {row['predicted']}\np={row['probability']:.2f}",
        "darkred" if wrong else "darkgreen",
    )


def gallery(
    table: pd.DataFrame,
    images: torch.Tensor,
    rows: np.ndarray,
    path: Path,
    title: str,
    scorer=None,
    columns: int = 6,
    caption=caption,
) -> None:
    """Write a PNG grid of ``table``'s ``rows`` (titled by ``caption``), each image beside its occlusion map
    (:mod:`handsigns.saliency`: where ``scorer`` looked for its prediction) for the first :data:`MAPPED`;
    without ``scorer``, the images alone.

    ``images`` (N x 3 x S x S uint8, row-aligned with ``table``) are the pixels the model saw: nothing is
    decoded again."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from handsigns.saliency import occlusion, overlay

    shown = table.iloc[rows].reset_index(drop=True)
    n = len(shown)
    wide = 2 if scorer is not None else 1
    columns = max(1, columns // wide)
    grid = max(1, -(-n // columns))
    fig, axes = plt.subplots(grid, columns, figsize=(columns * 1.8 * wide, grid * 2.0 + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, row in shown.iterrows():
        pixels = images[rows[i]].permute(1, 2, 0).numpy()
        if scorer is not None and i < MAPPED:
            pixels = np.asarray(overlay(pixels, occlusion(scorer, pixels)[0], scale=1))
        text, colour = caption(row)
        axes.flat[i].imshow(pixels)
        axes.flat[i].set_title(text, fontsize=8, color=colour)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80, metadata={"Software": None})
    plt.close(fig)
