"""Label images with the exported ONNX model (onnxruntime, NumPy, Pillow; no torch): ``handsigns predict`` and
the Python API::

    from handsigns import Predictor
    p = Predictor("models/model.onnx")
    p.predict("foto.jpg")              # Prediction(label='3', probability=0.97, probabilities={'0': ..., ...},
                                       #            ood_score=0.42, unsure=False)
    p.predict(["a.jpg", pil_image, array])   # one Prediction each

Decoding goes through :func:`handsigns.imaging.load_rgb` (files) and :func:`handsigns.imaging.fit` (PIL images
and arrays), the path training used, and normalisation is inside the model, so a prediction here equals the
pipeline's own on the same file.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from PIL import Image

from handsigns import calibration
from handsigns.errors import UserError
from handsigns.files import atomic_path
from handsigns.imaging import DECODE_ERRORS, ImageTooLarge, fit, is_image_name, load_rgb
from handsigns.paths import ONNX

BATCH = 64


@dataclass(frozen=True)
class Prediction:
    label: str  # the most probable class
    probability: float  # its probability
    probabilities: dict[str, float]  # every class's, in the model's class order
    # How unlike the training images the picture is (handsigns.ood): above 1, ``unsure``: the label is not to be
    # trusted. None for a model exported without the check (ood.check: false, or an older export).
    ood_score: float | None = None
    unsure: bool = False

    def top(self, k: int) -> list[tuple[str, float]]:
        """The ``k`` most probable (label, probability), most probable first; ties in class order."""
        return sorted(self.probabilities.items(), key=lambda item: -item[1])[:k]  # sorted is stable


class Predictor:
    """The exported model with its card. Probabilities are calibrated: temperature-scaled by the card's
    temperature (fitted on val by the evaluate stage); ``calibrated=False`` gives the network's own softmax.
    Labels are the same either way."""

    def __init__(self, model_path: str | os.PathLike[str] = ONNX, *, calibrated: bool = True) -> None:
        import onnxruntime as ort

        model_path = Path(model_path)
        card_path = model_path.with_suffix(".json")
        if not model_path.exists():
            raise UserError(f"{model_path} not found; run `make repro` (or `dvc repro export`), or pass --model")
        if not card_path.exists():
            raise UserError(f"{card_path} not found; the model card must lie beside {model_path.name}")
        try:
            card = json.loads(card_path.read_text())
            self.card: dict = card
            self.classes: list[str] = list(card["classes"])
            self.image_size: int = int(card["image_size"])
            self.input_name: str = card["input"]["name"]
            self.output_name: str = card["output"]["name"]
            # A card from before calibration has none: its probabilities are the network's own.
            self.temperature: float = float(card.get("calibration", {}).get("temperature", 1.0)) if calibrated else 1.0
            ood = card.get("ood") or {}
            self.ood_output: str | None = ood.get("output")  # None: this model has no out-of-distribution check
            self.unsure_above: float = float(ood.get("unsure_above", 1.0))
        except (ValueError, KeyError, TypeError) as exc:
            raise UserError(
                f"{card_path} is not a handsigns model card ({type(exc).__name__}: {exc}); "
                "re-run the export stage (dvc repro export)"
            ) from None
        try:
            self.session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
            raise UserError(f"{model_path} is not a loadable ONNX model ({str(exc).splitlines()[0]})") from None
        self._check_card(model_path, card_path)

    def _check_card(self, model_path: Path, card_path: Path) -> None:
        """The card must describe this model: its input name and size, its output name and class count."""
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        takes = [list(i.shape[1:]) for i in inputs if i.name == self.input_name]
        gives = [o.shape[-1] for o in outputs if o.name == self.output_name]
        scores = [o.name for o in outputs if o.name == self.ood_output]
        size = self.image_size
        if takes != [[3, size, size]] or gives != [len(self.classes)] or len(scores) != (self.ood_output is not None):
            ins = ", ".join(f"{i.name} {list(i.shape)}" for i in inputs)
            outs = ", ".join(f"{o.name} {list(o.shape)}" for o in outputs)
            says = f"the card says {len(self.classes)} classes from {size}x{size} images"
            says += f" and an output {self.ood_output}" if self.ood_output else ""
            raise UserError(
                f"{card_path} does not describe {model_path}: {says}, the model is {ins} -> {outs}; "
                "use the card exported with it (dvc repro export)"
            )

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """``pixels``: N x S x S x 3 uint8, a batch of N images (each as load_rgb returns one) -> N x classes
        probabilities, at the card's temperature."""
        return self._calibrated(self._network(pixels))

    def _calibrated(self, probs: np.ndarray) -> np.ndarray:
        if self.temperature == 1.0:
            return probs
        return np.exp(calibration.scale(calibration.log_of(probs), self.temperature))

    def log_probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """As :meth:`probabilities`, in float64 logs: no saturation at 1 for a confident model."""
        return calibration.scale(calibration.log_of(self._network(pixels)), self.temperature)

    def _network(self, pixels: np.ndarray) -> np.ndarray:
        """The ONNX model's own output: N x classes softmax probabilities (float32)."""
        return self._run(pixels, [self.output_name])[0]

    def _run(self, pixels: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
        batch = np.ascontiguousarray(pixels.transpose(0, 3, 1, 2))
        return self.session.run(outputs, {self.input_name: batch})

    def predictions(self, pixels: np.ndarray) -> list[Prediction]:
        """``pixels``: N x S x S x 3 uint8, a batch of N images (each as :meth:`pixels` gives one) -> one
        :class:`Prediction` each: the one place probabilities become labels, for the API, ``handsigns predict``
        and ``handsigns serve``."""
        found = self._run(pixels, [self.output_name, *([self.ood_output] if self.ood_output else [])])
        scores = found[1] if self.ood_output else None
        out = []
        for i, p in enumerate(self._calibrated(found[0])):
            best = int(np.argmax(p))
            every = {c: float(q) for c, q in zip(self.classes, p, strict=True)}
            score = None if scores is None else float(scores[i])
            unsure = score is not None and score > self.unsure_above
            out.append(Prediction(self.classes[best], float(p[best]), every, score, unsure))
        return out

    def pixels(self, image: str | os.PathLike[str] | bytes | Image.Image | np.ndarray) -> np.ndarray:
        """One image as the model takes it (S x S x 3 uint8): a file path or a file's bytes, a PIL image, or an
        H x W (grey), H x W x 3 (RGB) or H x W x 4 (RGBA) uint8 array."""
        if isinstance(image, str | os.PathLike | bytes):
            return load_rgb(image, self.image_size)
        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8:
                how = "(x * 255).round().astype(np.uint8) for floats in [0, 1]"
                raise UserError(f"an image array must be uint8 pixels 0-255, not {image.dtype}; convert it, e.g. {how}")
            if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
                raise UserError(f"an image array must be H x W, H x W x 3 or H x W x 4; got shape {image.shape}")
            image = Image.fromarray(image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image)
        if not isinstance(image, Image.Image):
            raise UserError(f"cannot label a {type(image).__name__}: give a path, a PIL image or a uint8 array")
        return np.asarray(fit(image, self.image_size), dtype=np.uint8)

    def predict(self, images: Any) -> Prediction | list[Prediction]:
        """Label one image (a path, a PIL image or an array) or many (a list or tuple of them, or an
        N x H x W x 3 array): one :class:`Prediction`, or a list of them in order."""
        many = isinstance(images, list | tuple) or (isinstance(images, np.ndarray) and images.ndim == 4)
        items = list(images) if many else [images]
        out = []
        for start in range(0, len(items), BATCH):
            out += self.predictions(np.stack([self.pixels(i) for i in items[start : start + BATCH]]))
        return out if many else out[0]

    def explain(self, image: Any) -> tuple[Prediction, np.ndarray]:
        """One image's prediction and where the model looked for it: its occlusion map
        (:func:`handsigns.saliency.occlusion`), S x S in [0, 1]; :func:`handsigns.saliency.overlay` draws it."""
        from handsigns.saliency import occlusion

        pixels = self.pixels(image)
        heat, _ = occlusion(self, pixels)
        return self.predictions(pixels[None])[0], heat


def explained_name(path: str) -> str:
    """The overlay's file name for image ``path``: its path with the folders joined by "__" (unique per image)."""
    parts = [p for p in Path(path).with_suffix("").parts if p not in ("/", "..", ".")]
    return "__".join(parts) + ".png"


def expand(paths: list[str]) -> Iterator[tuple[str, bool]]:
    """Files as given; folders expanded (recursively, sorted) to their image files. Yields (path, exists)."""
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found = sorted(str(f) for f in path.rglob("*") if f.is_file() and is_image_name(f.name))
            if not found:
                yield p, False
            yield from ((f, True) for f in found)
        else:
            yield p, path.is_file()


def read(predictor: Predictor, path: str, exists: bool, err: TextIO) -> np.ndarray | None:
    """``path``'s pixels as ``predictor`` takes them, or None after one ``error:`` line on ``err`` saying why not."""
    if not exists:
        what = "no image files in folder" if os.path.isdir(path) else "no such file"
        print(f"error: {path}: {what}", file=err)
        return None
    try:
        return predictor.pixels(path)
    except DECODE_ERRORS as exc:
        what = "too large to decode" if isinstance(exc, ImageTooLarge) else "not a readable image"
        print(f"error: {path}: {what} ({type(exc).__name__}: {str(exc)[:160]})", file=err)
        return None


def line(path: str, prediction: Prediction, k: int, as_json: bool) -> str:
    """``handsigns predict``'s line for one image: its ``k`` most probable labels and, with the check, its
    out-of-distribution score; tab-separated, or a JSON object."""
    top = prediction.top(k)
    if as_json:
        record: dict[str, Any] = {"path": path, "label": top[0][0], "probability": round(top[0][1], 6)}
        if k > 1:
            record["top_k"] = [{"label": c, "probability": round(q, 6)} for c, q in top]
        if prediction.ood_score is not None:
            record |= {"ood_score": round(prediction.ood_score, 4), "unsure": prediction.unsure}
        return json.dumps(record, ensure_ascii=False)
    pairs = [(c, f"{q:.4f}") for c, q in top]
    if prediction.ood_score is not None:  # one more (word, number) pair: the check's verdict
        pairs.append(("unsure" if prediction.unsure else "sure", f"{prediction.ood_score:.2f}"))
    return f"{path}\t" + "\t".join(f"{a}\t{b}" for a, b in pairs)


def label(
    predictor: Predictor,
    batch: list[tuple[str, np.ndarray]],
    k: int,
    as_json: bool,
    *,
    out: TextIO,
    explain: Path | None,
) -> None:
    """Label ``batch`` ((path, pixels) pairs) in one run of the model: a :func:`line` each on ``out`` and, with
    ``explain``, each image's occlusion overlay written into that folder."""
    for (path, pixels), prediction in zip(batch, predictor.predictions(np.stack([a for _, a in batch])), strict=True):
        if explain is not None:
            from handsigns.saliency import occlusion, overlay

            heat, _ = occlusion(predictor, pixels)
            with atomic_path(explain / explained_name(path)) as tmp:
                overlay(pixels, heat).save(tmp, format="PNG")
        print(line(path, prediction, k, as_json), file=out)
    out.flush()


def run(
    paths: list[str],
    model: Path,
    top_k: int,
    as_json: bool,
    *,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    explain: Path | None = None,
) -> int:
    """``handsigns predict``: label ``paths`` (files, or folders of images) in batches of :data:`BATCH`, a line
    each on ``out`` as soon as its batch is done; 1 when any could not be labelled (each named on ``err``)."""
    predictor = Predictor(model)
    if explain is not None:
        explain.mkdir(parents=True, exist_ok=True)
    k = max(1, min(top_k, len(predictor.classes)))
    if predictor.ood_output is None:
        print(f"predict: {model} has no out-of-distribution check (ood.check: false, or an older export)", file=err)
    failures, batch = 0, []
    for path, exists in expand(paths):
        pixels = read(predictor, path, exists, err)
        if pixels is None:
            failures += 1
            continue
        batch.append((path, pixels))
        if len(batch) >= BATCH:
            label(predictor, batch, k, as_json, out=out, explain=explain)
            batch = []
    if batch:
        label(predictor, batch, k, as_json, out=out, explain=explain)
    return 1 if failures else 0
