"""The out-of-distribution check ("that is not a hand sign"): how unlike the training images a picture is, and
when to say so.

The score is the Mahalanobis distance (Lee et al., 2018) of the image's penultimate features (the input of the
network's last layer) to the nearest class mean of the training images, under their shared within-class
covariance, shrunk towards a multiple of the identity so that it is invertible with few images or wide features.
On every out-of-distribution set of :mod:`handsigns.outliers` it matched or beat the softmax's maximum, the
maximum logit, the energy and k nearest neighbours, and it alone caught all of them (docs/trust.md has the
figures): the softmax is as sure of a texture or a portrait as of a hand, the features are not.

The threshold is fitted per model, never per data set: the distance that at most ``ood.max_val_flagged`` of the
val images exceed. The exported ONNX graph computes the score itself, divided by that threshold, as its second
output :data:`OUTPUT_NAME`: above 1, the picture is unlike the training images (``unsure``). Every consumer (predict,
the Python API, the demo page) reads that output and needs no statistics of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from handsigns.dataset import Images, Split
from handsigns.model import Classifier, head
from handsigns.params.recipe import OodParams

OUTPUT_NAME = "ood_score"
SHRINKAGE = 0.01  # of the covariance towards (mean variance) x identity: invertible, barely changed
# ...and never below this fraction of the features' mean square: a spread under 1 % of their size (a model whose
# features barely move, such as one trained for an epoch on a few dozen images) is float32 rounding, not signal,
# and whitening it would make the score a measure of rounding (ONNX Runtime and PyTorch then disagree)
FLOOR = 1e-4
# The threshold is at least this many whitened units per feature dimension (0.1 sqrt(D)): far inside any spread
# the model really has (its own images lie about sqrt(D) from their class mean), and it keeps the threshold of a
# model whose features do not move at all above their rounding
MIN_THRESHOLD = 0.1
UNSURE_ABOVE = 1.0  # the exported score is distance / threshold


@dataclass(frozen=True)
class Detector:
    means: np.ndarray  # classes x D: the training features' class means (float64)
    whitening: np.ndarray  # D x D: |(f - mean) @ whitening| is the Mahalanobis distance
    threshold: float  # the distance above which an image is flagged

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Each image's Mahalanobis distance to the nearest class mean (float64)."""
        white = (np.asarray(features, dtype=np.float64) @ self.whitening)[:, None, :]
        return np.sqrt(((white - (self.means @ self.whitening)[None]) ** 2).sum(-1).min(1))

    def scores(self, features: np.ndarray) -> np.ndarray:
        """Distances in units of the threshold: above :data:`UNSURE_ABOVE`, flagged (the exported output)."""
        return self.distances(features) / self.threshold


def penultimate(features: torch.Tensor) -> torch.Tensor:
    """The head's input as one vector per image: a 4-D map (SqueezeNet's convolutional head) averaged over space."""
    return features.mean((2, 3)) if features.ndim == 4 else features.flatten(1)


class _Tap:
    """Holds the input of ``module`` from the last forward pass (a forward pre-hook: no copy, no second pass)."""

    def __init__(self, module: nn.Module) -> None:
        self.value: torch.Tensor | None = None
        self.handle = module.register_forward_pre_hook(self._keep)

    def _keep(self, _module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        self.value = args[0]


def head_module(model: Classifier) -> nn.Module:
    return model.net.get_submodule(head(model.net))


@torch.inference_mode()
def features(model: Classifier, images: Images, batch_size: int) -> np.ndarray:
    """Penultimate features (N x D, float64) of uint8 ``images`` on the CPU in fp32, the exported model's path."""
    model.eval()
    tap = _Tap(head_module(model))
    out = []
    try:
        for start in range(0, len(images), batch_size):
            model.log_probs(images[start : start + batch_size])
            assert tap.value is not None
            out.append(penultimate(tap.value).double().numpy())
    finally:
        tap.handle.remove()
    return np.concatenate(out) if out else np.zeros((0, 0))


def threshold(val_distances: np.ndarray, max_flagged: float) -> float:
    """A distance that at most ``max_flagged`` of the val images exceed: halfway between the last val distance
    allowed below it and the next, so that no val image sits on it (where float32 rounding would decide)."""
    ordered = np.sort(np.asarray(val_distances, dtype=np.float64))
    below = ordered[len(ordered) - 1 - int(np.floor(max_flagged * len(ordered) + 1e-9))]
    higher = ordered[ordered > below]  # the next distinct distance: ties stay below the threshold together
    above = higher[0] if len(higher) else below * 1.01
    return float((below + above) / 2)


def fit(train: np.ndarray, labels: np.ndarray, num_classes: int, val: np.ndarray, max_flagged: float) -> Detector:
    """The detector of training features ``train`` (N x D) with class ``labels``; its threshold from ``val``'s."""
    train = np.asarray(train, dtype=np.float64)
    present = [c for c in range(num_classes) if (labels == c).any()]
    means = np.stack([train[labels == c].mean(0) for c in present])
    centred = train - means[np.searchsorted(present, labels)]
    cov = centred.T @ centred / max(len(train) - len(present), 1)
    dim = len(cov)
    ridge = max(SHRINKAGE * np.trace(cov) / dim, FLOOR * float((train**2).mean()), 1e-12)
    shrunk = (1 - SHRINKAGE) * cov + ridge * np.eye(dim)
    # shrunk = L L^T; |(f - m) @ inv(L)^T| = sqrt((f - m) shrunk^-1 (f - m)^T). Cholesky: unique, no sign choice.
    lower = np.linalg.cholesky(shrunk)
    whitening = np.linalg.inv(lower).T
    unscaled = Detector(means, whitening, 1.0)
    cut = max(threshold(unscaled.distances(val), max_flagged), MIN_THRESHOLD * np.sqrt(dim))
    return Detector(means, whitening, cut)


class Scored(nn.Module):
    """:class:`Classifier` with the detector inside: uint8 pixels in; class probabilities and the score out
    (the exported graph). The detector's statistics are float32 constants of the graph."""

    # buffers (register_buffer), declared as tensors: nn.Module's attribute lookup says Tensor | Module
    whitening: torch.Tensor
    centres: torch.Tensor

    def __init__(self, model: Classifier, detector: Detector) -> None:
        super().__init__()
        self.model = model
        self.tap = _Tap(head_module(model))
        scale = 1.0 / detector.threshold
        self.register_buffer("whitening", torch.tensor(detector.whitening * scale, dtype=torch.float32))
        self.register_buffer("centres", torch.tensor(detector.means @ detector.whitening * scale, dtype=torch.float32))

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probabilities = self.model(pixels)
        assert self.tap.value is not None
        white = penultimate(self.tap.value) @ self.whitening
        distance = ((white[:, None, :] - self.centres[None]) ** 2).sum(-1).amin(1).sqrt()
        return probabilities, distance


def fit_model(
    model: Classifier, train: Split, val: Split, num_classes: int, max_flagged: float, batch_size: int
) -> Detector:
    """:func:`fit` on ``model``'s features of the ``train`` and ``val`` images."""
    return fit(
        features(model, train.images, batch_size),
        train.labels.numpy(),
        num_classes,
        features(model, val.images, batch_size),
        max_flagged,
    )


def _share(scores: np.ndarray) -> float:
    return round(float(np.mean(scores > UNSURE_ABOVE)), 6) if len(scores) else 0.0


HEADLINE = ("test_flagged", "auroc", "caught")  # into metrics/eval.json: the cost and the catch


def report(
    model: Classifier, splits: dict[str, Split], num_classes: int, params: OodParams, image_size: int, batch_size: int
) -> tuple[dict, Detector | None]:
    """The evaluate stage's metrics/eval/ood.json and the detector it describes (None, with ``{"check": False}``,
    when ``params`` turn the check off): fitted on ``splits``' train and val, then judged: the share of val and
    test images flagged; on each set of :mod:`handsigns.outliers`, and on all of them pooled (the headline), the
    AUROC against test and the share caught. Each split's features are computed once."""
    if not params.check:
        return {"check": False}, None
    from handsigns import outliers

    found = {name: features(model, splits[name].images, batch_size) for name in ("train", "val", "test")}
    labels = splits["train"].labels.numpy()
    detector = fit(found["train"], labels, num_classes, found["val"], params.max_val_flagged)
    test_scores = detector.scores(found["test"])
    outside = {
        name: detector.scores(features(model, torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy()), batch_size))
        for name, pixels in outliers.sets(image_size).items()
    }

    def against_test(scores: np.ndarray) -> dict:
        return {"auroc": round(auroc(test_scores, scores), 6), "caught": _share(scores)}

    judged = {
        "check": True,
        "max_val_flagged": params.max_val_flagged,
        "threshold_distance": float(f"{detector.threshold:.6g}"),
        "val_flagged": _share(detector.scores(found["val"])),
        "test_flagged": _share(test_scores),
        **against_test(np.concatenate(list(outside.values()))),
        "sets": {name: {**against_test(scores), "images": len(scores)} for name, scores in outside.items()},
    }
    return judged, detector


def summary(report: dict) -> str:
    pictures = sum(s["images"] for s in report["sets"].values())
    return (
        f"the out-of-distribution check flags {report['test_flagged']:.1%} of the test images and catches "
        f"{report['caught']:.1%} of {pictures} pictures that are not of the data set (AUROC {report['auroc']:.4f})"
    )


def auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    """Area under the ROC curve of telling ``outside`` scores from ``inside`` ones (higher = more unlike): the
    chance that a random outside image scores above a random inside one, ties counted half."""
    inside, outside = np.asarray(inside, dtype=np.float64), np.asarray(outside, dtype=np.float64)
    if not len(inside) or not len(outside):
        return float("nan")
    ranked = np.sort(inside)
    below = np.searchsorted(ranked, outside, side="left")
    ties = np.searchsorted(ranked, outside, side="right") - below
    return float((below + 0.5 * ties).sum() / (len(inside) * len(outside)))
