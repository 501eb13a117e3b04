"""Export the best model: safetensors weights, an ONNX graph (dynamic batch) and a model card, then verify
that ONNX Runtime and PyTorch agree on real images (same labels, probabilities within a tolerance)."""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from handsigns.errors import UserError
from handsigns.files import atomic_path, write_json
from handsigns.model import Classifier
from handsigns.paths import CARD, ONNX, SAFETENSORS

INPUT_NAME, OUTPUT_NAME = "pixels", "probabilities"
OPSET = 18


def save_safetensors(module: torch.nn.Module, path: Path, metadata: dict) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
    # One metadata key: safetensors writes the metadata map in a per-process random order, and the file must
    # be the same bytes on every export of the same weights.
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"handsigns": json.dumps(metadata, sort_keys=True)})


def save_onnx(module: Classifier, image_size: int, path: Path) -> None:
    example = torch.zeros((2, 3, image_size, image_size), dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=65_536)
    with atomic_path(path) as tmp:
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch},),
            opset_version=OPSET,
            external_data=False,
            verbose=False,
        )
        program.save(str(tmp), external_data=False)
        _drop_stack_traces(tmp)


def _drop_stack_traces(path: Path) -> None:
    """Remove the exporter's per-node Python stack traces: they name this checkout's absolute path, so the
    same model exported from two clones would differ. The remaining node metadata is path-free."""
    import onnx

    proto = onnx.load(str(path))

    def nodes(graph: onnx.GraphProto):
        for node in graph.node:
            yield node
            for attr in node.attribute:  # the bodies of If/Loop/Scan, should a model ever have them
                for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                    yield from nodes(sub)

    every = [*nodes(proto.graph), *(n for f in proto.functions for n in f.node)]
    for node in every:
        kept = [p for p in node.metadata_props if p.key != "pkg.torch.onnx.stack_trace"]
        del node.metadata_props[:]
        node.metadata_props.extend(kept)
    onnx.save(proto, str(path))


def onnx_probabilities(path: Path, pixels: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run([OUTPUT_NAME], {INPUT_NAME: pixels})[0]


def verify(module: Classifier, onnx_path: Path, pixels: torch.Tensor, atol: float = 1e-4) -> dict:
    """Run both runtimes on ``pixels`` (N x 3 x S x S uint8); raise UserError unless they agree."""
    with torch.no_grad():
        expected = module(pixels).numpy()
    got = onnx_probabilities(onnx_path, pixels.numpy())
    max_diff = float(np.abs(expected - got).max()) if len(pixels) else 0.0
    same = int((expected.argmax(1) == got.argmax(1)).sum())
    if same != len(pixels) or max_diff > atol:
        raise UserError(
            f"export check failed: ONNX Runtime and PyTorch disagree on {len(pixels) - same} of "
            f"{len(pixels)} labels, max probability difference {max_diff:.2e} (tolerance {atol:g})"
        )
    return {"images": len(pixels), "labels_equal": same, "max_probability_diff": max_diff, "tolerance": atol}


def check_committed(module: Classifier, classes: list[str], pixels: torch.Tensor) -> dict:
    """The export check on an export made elsewhere (pulled from a DVC remote): the model card must name the
    checkpoint's ``classes``, model.safetensors must hold exactly ``module``'s weights (the checkpoint's), and
    model.onnx must agree with it on ``pixels`` as :func:`verify` requires. A UserError names what does not
    match."""
    from safetensors.torch import load_file

    for path in (SAFETENSORS, ONNX, CARD):
        if not path.exists():
            raise UserError(f"{path} not found; pull the run's outputs first (handsigns pull)")
    card_classes = json.loads(CARD.read_text()).get("classes")
    if card_classes != classes:
        raise UserError(f"export check failed: {CARD} names classes {card_classes}, the checkpoint {classes}")
    saved = load_file(str(SAFETENSORS))
    expected = module.state_dict()
    same = {k for k in expected.keys() & saved.keys() if torch.equal(saved[k], expected[k].detach())}
    differ = sorted((expected.keys() | saved.keys()) - same)
    if differ:
        raise UserError(
            f"export check failed: {SAFETENSORS} does not hold {len(differ)} of the checkpoint's tensors "
            f"({', '.join(differ[:3])}): it was not exported from this models/best.pt"
        )
    return verify(module, ONNX, pixels)


HEADLINE = ("accuracy", "loss", "macro_f1", "ece")  # of metrics/eval.json's val and test, into the card


def model_card(ckpt: dict, image_size: int, evaluation: dict, data: dict, check: dict) -> dict:
    """The card: what the model takes and gives, how it was made, and ``evaluation``'s headline figures
    (metrics/eval.json) and temperature (under ``calibration``: metrics/eval/calibration.json)."""
    import onnxruntime

    calibration = evaluation["calibration"]
    return {
        "name": "handsigns",
        "task": "image classification",
        "classes": ckpt["classes"],
        "input": {
            "name": INPUT_NAME,
            "shape": ["batch", 3, image_size, image_size],
            "dtype": "uint8",
            "layout": "NCHW",
            "colour": "RGB",
            "range": [0, 255],
            "resize": "Pillow bilinear to image_size x image_size (handsigns.imaging.load_rgb)",
        },
        "output": {"name": OUTPUT_NAME, "shape": ["batch", len(ckpt["classes"])], "meaning": "softmax"},
        # Temperature scaling, fitted on val by the evaluate stage; the ONNX output is the model's own softmax p,
        # and handsigns' Predictor reports softmax(log p / temperature): the same labels, honest confidences.
        "calibration": {
            "temperature": calibration["temperature"],
            "apply": "softmax(log(probabilities) / temperature)",
            "fitted_on": "val",
            "test_ece_before": evaluation["test"]["ece"],
            "test_ece_after": calibration["test_ece"],
        },
        "image_size": image_size,
        "normalisation": ckpt["normalisation"],
        "normalisation_inside_model": True,
        "architecture": ckpt["model"],
        "start": ckpt.get("start"),  # the starting weights (model.weights / train.init_from) and their sha256
        "best_epoch": ckpt["epoch"],
        "metrics": {s: {k: evaluation[s][k] for k in HEADLINE} for s in ("val", "test")},
        "data": data,
        "params": ckpt["params"],
        "export_check": check,
        "versions": {
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "python": platform.python_version(),
            "opset": OPSET,
        },
        "files": {"onnx": ONNX.name, "safetensors": SAFETENSORS.name},
    }


def export_verified(
    module: Classifier,
    ckpt: dict,
    image_size: int,
    test_pixels: torch.Tensor,
    evaluation: dict,
    data: dict,
    out_dir: Path,
) -> dict:
    """Write model.safetensors, model.onnx and model.json into ``out_dir`` only once ONNX Runtime agrees
    with PyTorch on ``test_pixels``; a failed check leaves the previous export untouched."""
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export.", dir=out_dir))
    try:
        save_safetensors(module, staging / SAFETENSORS.name, {"classes": ckpt["classes"], "image_size": image_size})
        save_onnx(module, image_size, staging / ONNX.name)
        check = verify(module, staging / ONNX.name, test_pixels)
        write_json(staging / CARD.name, model_card(ckpt, image_size, evaluation, data, check))
        for name in (SAFETENSORS.name, ONNX.name, CARD.name):  # the card last: it vouches for the rest
            os.replace(staging / name, out_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return check
