"""Evaluate the best model on val and test: exact metrics, per-sample predictions, calibration, the
out-of-distribution report, and galleries of the test images beside where the model looked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from handsigns import calibration, ood
from handsigns.checkpoint import score
from handsigns.dataset import Images, Split
from handsigns.errors import UserError
from handsigns.files import atomic_path
from handsigns.metrics import report
from handsigns.model import Classifier
from handsigns.params.recipe import RecipeParams
from handsigns.paths import INDEX, OOD_REPORT

SCORED = ("val", "test")  # the splits the metrics are of; train only feeds the out-of-distribution check


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


@dataclass
class Evaluation:
    """What the evaluate stage writes."""

    metrics: dict  # metrics/eval.json: val and test headline figures, and the check's (``ood``)
    calibration: dict  # the temperature fitted on val and test's ECE after it (calibration.json)
    ood: dict  # the out-of-distribution report (ood.json)
    tables: dict[str, pd.DataFrame]  # metrics/eval/<name>.csv: per class, per image, reliability bins


def evaluate(
    model: Classifier, splits: dict[str, Split], classes: list[str], recipe: RecipeParams, image_size: int
) -> Evaluation:
    """Score val and test (:data:`SCORED`), fit the temperature on val, and fit and judge the
    out-of-distribution check (on train and val, when ``recipe.ood.check``); each figure's headline printed.
    Everything is computed before the stage writes anything."""
    metrics: dict[str, dict] = {}
    tables: dict[str, pd.DataFrame] = {}
    logprobs: dict[str, np.ndarray] = {}
    batch = recipe.evaluate.batch_size
    for name in SCORED:
        split = splits[name]
        if len(split) == 0:
            raise UserError(f"the {name} split is empty; check {INDEX}/{name}.csv (dvc repro split)")
        metrics[name], per_class, table, logprobs[name] = evaluate_split(model, split, classes, batch)
        tables |= {f"per_class_{name}": per_class, f"predictions_{name}": table}
    calibrated, reliability = calibrate(*((logprobs[n], splits[n].labels.numpy()) for n in SCORED))
    for name in SCORED:
        table = tables[f"predictions_{name}"]
        errors = int((table["actual"] != table["predicted"]).sum())
        print(
            f"evaluate: {name} accuracy {metrics[name]['accuracy']:.4f} ({errors} errors of {len(table)}), "
            f"macro-F1 {metrics[name]['macro_f1']:.4f}"
        )
    checked, _ = ood.report(model, splits, len(classes), recipe.ood, image_size, batch)
    if checked["check"]:
        metrics["ood"] = {k: checked[k] for k in ood.HEADLINE}
        print(f"evaluate: {ood.summary(checked)} ({OOD_REPORT})")
    print(
        f"evaluate: test expected calibration error {metrics['test']['ece']:.4f}, {calibrated['test_ece']:.4f} "
        f"at temperature {calibrated['temperature']:g} (fitted on val; predict applies it)"
    )
    return Evaluation(metrics, calibrated, checked, reliability | tables)


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
    images: Images,
    rows: np.ndarray,
    path: Path,
    title: str,
    *,
    scorer=None,
    columns: int = 6,
    caption=caption,
) -> None:
    """Write a PNG grid of ``table``'s ``rows`` (titled by ``caption``), each image beside its occlusion map
    (:mod:`handsigns.saliency`: where ``scorer`` looked for its prediction) for the first :data:`MAPPED`;
    without ``scorer``, the images alone.

    ``images`` (N x 3 x S x S uint8, row-aligned with ``table``) are the pixels the model saw: in memory, nothing
    is decoded again; streamed, only the images shown are."""
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


def galleries(
    model: Classifier, test: Split, table: pd.DataFrame, batch_size: int, *, misclassified: Path, explained: Path
) -> None:
    """Two galleries of ``test`` (``table``: its predictions), each image beside its occlusion map: every
    misclassified image, and the first :data:`SAMPLE_PER_CLASS` right ones of each class."""
    scorer, shown = TorchScorer(model, batch_size), explained_rows(table)
    wrong = len(shown["misclassified"])
    title = f"misclassified test images: {wrong} of {len(table)} (beside: where the model looked)"
    gallery(table, test.images, shown["misclassified"], misclassified, title, scorer=scorer)
    title = f"where the model looks: the first {SAMPLE_PER_CLASS} right test images of each class"
    gallery(table, test.images, shown["correct"], explained, title, scorer=scorer)
