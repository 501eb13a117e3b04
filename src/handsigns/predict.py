"""``handsigns predict``: label images with the exported ONNX model (onnxruntime, NumPy, Pillow; no torch).

Decoding goes through :func:`handsigns.imaging.load_rgb`, the path training used, and normalisation is
inside the model, so a prediction here equals the pipeline's own on the same file.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from handsigns.errors import UserError
from handsigns.imaging import DECODE_ERRORS, ImageTooLarge, is_image_name, load_rgb

BATCH = 64


class Predictor:
    def __init__(self, model_path: Path) -> None:
        import onnxruntime as ort

        card_path = model_path.with_suffix(".json")
        if not model_path.exists():
            raise UserError(f"{model_path} not found; run `make repro` (or `dvc repro export`), or pass --model")
        if not card_path.exists():
            raise UserError(f"{card_path} not found; the model card must lie beside {model_path.name}")
        try:
            card = json.loads(card_path.read_text())
            self.classes: list[str] = list(card["classes"])
            self.image_size: int = int(card["image_size"])
            self.input_name: str = card["input"]["name"]
            self.output_name: str = card["output"]["name"]
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
        size = self.image_size
        if takes != [[3, size, size]] or gives != [len(self.classes)]:
            found = ", ".join(f"{i.name} {list(i.shape)}" for i in inputs) + " -> " + \
                ", ".join(f"{o.name} {list(o.shape)}" for o in outputs)  # fmt: skip
            raise UserError(f"{card_path} does not describe {model_path}: the card says {len(self.classes)} classes "
                            f"from {size}x{size} images, the model is {found}; use the card exported with it "
                            "(dvc repro export)")  # fmt: skip

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """``pixels``: N x S x S x 3 uint8 (as load_rgb returns) -> N x classes probabilities."""
        batch = np.ascontiguousarray(pixels.transpose(0, 3, 1, 2))
        return self.session.run([self.output_name], {self.input_name: batch})[0]


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


def run(paths: list[str], model: Path, top_k: int, as_json: bool, out=sys.stdout, err=sys.stderr) -> int:
    predictor = Predictor(model)
    k = max(1, min(top_k, len(predictor.classes)))
    failures = 0
    pending: list[tuple[str, np.ndarray]] = []

    def flush() -> None:
        if not pending:
            return
        probs = predictor.probabilities(np.stack([a for _, a in pending]))
        for (path, _), p in zip(pending, probs, strict=True):
            order = np.argsort(-p, kind="stable")[:k]
            top = [(predictor.classes[i], float(p[i])) for i in order]
            if as_json:
                record = {"path": path, "label": top[0][0], "probability": round(top[0][1], 6)}
                if k > 1:
                    record["top_k"] = [{"label": c, "probability": round(q, 6)} for c, q in top]
                print(json.dumps(record, ensure_ascii=False), file=out)
            else:
                print(f"{path}\t" + "\t".join(f"{c}\t{q:.4f}" for c, q in top), file=out)
        out.flush()
        pending.clear()

    for path, exists in expand(paths):
        if not exists:
            what = "no image files in folder" if os.path.isdir(path) else "no such file"
            print(f"error: {path}: {what}", file=err)
            failures += 1
            continue
        try:
            pending.append((path, load_rgb(path, predictor.image_size)))
        except DECODE_ERRORS as exc:
            what = "too large to decode" if isinstance(exc, ImageTooLarge) else "not a readable image"
            print(f"error: {path}: {what} ({type(exc).__name__}: {str(exc)[:160]})", file=err)
            failures += 1
            continue
        if len(pending) >= BATCH:
            flush()
    flush()
    return 1 if failures else 0
