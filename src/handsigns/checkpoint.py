"""Saved models and inference: write and read ``models/best.pt``, rebuild its :class:`Classifier`, and
score images with it in batches. Train writes through here; evaluate and export read through here."""

from __future__ import annotations

from pathlib import Path

import torch

from handsigns.dataset import Images
from handsigns.errors import UserError
from handsigns.files import atomic_path
from handsigns.model import Classifier, build_net
from handsigns.params.recipe import ModelParams
from handsigns.runtime import autocast

REQUIRED = ("state_dict", "classes", "model", "normalisation", "epoch")


def save(path: Path, obj: dict) -> None:
    # Saved through a file object: torch.save(obj, path) names the archive's inner folder after the (random)
    # temporary file name, which would make identical checkpoints differ byte for byte.
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)


def load(path: Path) -> dict:
    """A checkpoint's contents (tensors and plain data only: ``weights_only``, never arbitrary pickles)."""
    if not path.exists():
        raise UserError(f"{path} not found; run the train stage first (dvc repro train)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for damaged or foreign files
        raise UserError(
            f"{path} is not a handsigns checkpoint ({type(exc).__name__}); re-run dvc repro train"
        ) from None
    missing = set(REQUIRED) - set(ckpt)
    if missing:
        raise UserError(f"{path} lacks {', '.join(sorted(missing))}; re-run dvc repro train")
    return ckpt


def load_model(path: Path) -> tuple[Classifier, dict]:
    """The :class:`Classifier` saved in ``path`` (eval mode, CPU) and the checkpoint's other contents."""
    ckpt = load(path)
    net = build_net(len(ckpt["classes"]), ModelParams(**ckpt["model"]))
    net.load_state_dict(ckpt["state_dict"])
    norm = ckpt["normalisation"]
    return Classifier(net, norm["mean"], norm["std"]).eval(), ckpt


def cpu_state(model: Classifier) -> dict[str, torch.Tensor]:
    """A copy of ``model``'s network state on the CPU, in the default layout: never a view of the live
    parameters, which the next step changes in place."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.net.state_dict().items()}


@torch.inference_mode()
def score(
    model: Classifier,
    images: Images,
    batch_size: int,
    device: torch.device | None = None,
    precision: str = "fp32",
) -> torch.Tensor:
    """Log-probabilities (float32, CPU) of uint8 ``images`` (N x 3 x S x S, sliced batch by batch), in order;
    ``model`` is left in eval mode."""
    device = device or torch.device("cpu")
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        with autocast(device, precision):
            out.append(model.log_probs(images[start : start + batch_size].to(device)).float().cpu())
    return torch.cat(out) if out else torch.zeros((0, 0))
