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
from handsigns.ood import OUTPUT_NAME as SCORE_NAME
from handsigns.ood import UNSURE_ABOVE, Detector, Scored
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


def exported(module: Classifier, detector: Detector | None) -> torch.nn.Module:
    """What the ONNX graph computes: the classifier, and the out-of-distribution score beside it when there is
    a detector (ood.check)."""
    return Scored(module, detector).eval() if detector is not None else module


def output_names(detector: Detector | None) -> list[str]:
    return [OUTPUT_NAME, SCORE_NAME] if detector is not None else [OUTPUT_NAME]


def save_onnx(module: Classifier, image_size: int, path: Path, detector: Detector | None = None) -> None:
    example = torch.zeros((2, 3, image_size, image_size), dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=65_536)
    with atomic_path(path) as tmp:
        program = torch.onnx.export(
            exported(module, detector),
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=output_names(detector),
            dynamic_shapes=({0: batch},),
            opset_version=OPSET,
            external_data=False,
            verbose=False,
        )
        assert program is not None  # dynamo=True: export returns the program
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


def onnx_outputs(path: Path, pixels: np.ndarray, names: list[str]) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(names, {INPUT_NAME: pixels})


SCORE_TOLERANCE = 1e-3  # relative: a distance amplifies the features' last bits along their narrowest directions


def verify(
    module: Classifier, onnx_path: Path, pixels: torch.Tensor, detector: Detector | None = None, atol: float = 1e-4
) -> dict:
    """Run both runtimes on ``pixels`` (N x 3 x S x S uint8); raise UserError unless they agree: the same labels,
    probabilities within ``atol`` and, with a detector, the same flags and scores within :data:`SCORE_TOLERANCE`
    of each score's size (the scores are distances, about 1 near the threshold)."""
    with torch.no_grad():
        out = exported(module, detector)(pixels)
    expected = [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]
    got = onnx_outputs(onnx_path, pixels.numpy(), output_names(detector))
    max_diff = float(np.abs(expected[0] - got[0]).max()) if len(pixels) else 0.0
    same = int((expected[0].argmax(1) == got[0].argmax(1)).sum())
    if same != len(pixels) or max_diff > atol:
        raise UserError(
            f"export check failed: ONNX Runtime and PyTorch disagree on {len(pixels) - same} of "
            f"{len(pixels)} labels, max probability difference {max_diff:.2e} (tolerance {atol:g})"
        )
    check = {"images": len(pixels), "labels_equal": same, "max_probability_diff": max_diff, "tolerance": atol}
    if detector is None:
        return check
    ours, theirs = expected[1], got[1]
    score_diff = float((np.abs(ours - theirs) / np.maximum(1.0, np.abs(ours))).max()) if len(pixels) else 0.0
    # A score within the tolerance of the threshold may fall either side of it: rounding, not disagreement.
    moot = np.abs(ours - UNSURE_ABOVE) <= SCORE_TOLERANCE * UNSURE_ABOVE
    flags = int((((ours > UNSURE_ABOVE) == (theirs > UNSURE_ABOVE)) | moot).sum())
    if score_diff > SCORE_TOLERANCE or flags != len(pixels):
        raise UserError(
            f"export check failed: ONNX Runtime and PyTorch disagree on {len(pixels) - flags} of {len(pixels)} "
            f"out-of-distribution flags, max relative score difference {score_diff:.2e} "
            f"(tolerance {SCORE_TOLERANCE:g})"
        )
    return check | {"flags_equal": flags, "max_ood_score_diff": score_diff}


def check_committed(
    module: Classifier, classes: list[str], pixels: torch.Tensor, detector: Detector | None = None
) -> dict:
    """The export check on an export made elsewhere (pulled from a DVC remote): the model card must name the
    checkpoint's ``classes``, model.safetensors must hold exactly ``module``'s weights (the checkpoint's), and
    model.onnx must agree with it (and ``detector``, refitted here) on ``pixels`` as :func:`verify` requires. A
    UserError names what does not match."""
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
    return verify(module, ONNX, pixels, detector)


HEADLINE = ("accuracy", "loss", "macro_f1", "ece")  # of metrics/eval.json's val and test, into the card


def ood_card(detector: Detector | None, evaluation: dict | None) -> dict | None:
    """The card's ``ood`` section: where the score is and what it costs (evaluate's figures,
    metrics/eval/ood.json); None when the model has no check (ood.check: false)."""
    if detector is None:
        return None
    return {
        "output": SCORE_NAME,
        "unsure_above": UNSURE_ABOVE,
        "meaning": "Mahalanobis distance of the penultimate features to the nearest class mean, over the "
        "distance that max_val_flagged of the val images exceed (handsigns.ood)",
        "threshold_distance": detector.threshold,
        **{k: v for k, v in (evaluation or {}).items() if k != "threshold_distance"},
    }


def input_card(image_size: int) -> dict:
    """The card's ``input`` section: what the ONNX model takes."""
    return {
        "name": INPUT_NAME,
        "shape": ["batch", 3, image_size, image_size],
        "dtype": "uint8",
        "layout": "NCHW",
        "colour": "RGB",
        "range": [0, 255],
        "resize": "Pillow bilinear to image_size x image_size (handsigns.imaging.load_rgb)",
    }


def calibration_card(evaluation: dict) -> dict:
    """The card's ``calibration`` section. Temperature scaling, fitted on val by the evaluate stage: the ONNX
    output is the model's own softmax p, and handsigns' Predictor reports softmax(log p / temperature): the
    same labels, honest confidences."""
    calibration = evaluation["calibration"]
    return {
        "temperature": calibration["temperature"],
        "apply": "softmax(log(probabilities) / temperature)",
        "fitted_on": "val",
        "test_ece_before": evaluation["test"]["ece"],
        "test_ece_after": calibration["test_ece"],
    }


def model_card(ckpt: dict, evaluation: dict, data: dict, check: dict, detector: Detector | None = None) -> dict:
    """The card: what the model takes and gives, how it was made, ``evaluation``'s headline figures
    (metrics/eval.json), temperature (under ``calibration``: metrics/eval/calibration.json) and out-of-distribution
    check (under ``ood``: metrics/eval/ood.json)."""
    import onnxruntime

    image_size = ckpt["model"]["image_size"]
    return {
        "name": "handsigns",
        "task": "image classification",
        "classes": ckpt["classes"],
        "input": input_card(image_size),
        "output": {"name": OUTPUT_NAME, "shape": ["batch", len(ckpt["classes"])], "meaning": "softmax"},
        "calibration": calibration_card(evaluation),
        "ood": ood_card(detector, evaluation.get("ood")),
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
    test_pixels: torch.Tensor,
    evaluation: dict,
    data: dict,
    out_dir: Path,
    *,
    detector: Detector | None = None,
) -> dict:
    """Write model.safetensors, model.onnx (with ``detector``'s score when given) and model.json into ``out_dir``
    only once ONNX Runtime agrees with PyTorch on ``test_pixels``; a failed check leaves the previous export
    untouched. The images are ``ckpt``'s size (its ``model.image_size``)."""
    image_size = ckpt["model"]["image_size"]
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export.", dir=out_dir))
    try:
        save_safetensors(module, staging / SAFETENSORS.name, {"classes": ckpt["classes"], "image_size": image_size})
        save_onnx(module, image_size, staging / ONNX.name, detector)
        check = verify(module, staging / ONNX.name, test_pixels, detector)
        write_json(staging / CARD.name, model_card(ckpt, evaluation, data, check, detector))
        for name in (SAFETENSORS.name, ONNX.name, CARD.name):  # the card last: it vouches for the rest
            os.replace(staging / name, out_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return check
