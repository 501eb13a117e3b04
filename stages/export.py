"""DVC stage `export`: models/model.safetensors, models/model.onnx and models/model.json (model card),
verified: ONNX Runtime on the real test images must give PyTorch's labels and probabilities within 1e-4.

``python stages/export.py --check`` writes nothing: it re-runs that check on an export already there (one
pulled from a DVC remote, made on another machine) against models/best.pt (``handsigns gate --verify``).
"""

import json
import sys

from handsigns.checkpoint import load_model
from handsigns.dataset import load_splits
from handsigns.errors import UserError, run_main
from handsigns.export import check_committed, export_verified
from handsigns.files import sha256_file
from handsigns.params import load
from handsigns.params.memory import MemoryParams
from handsigns.paths import BEST, CALIBRATION, EVAL_METRICS, INDEX, MODELS, ONNX

VERIFY_IMAGES = 1024  # the first test images (all of SIGNS's 120): parity holds or fails on a few hundred


def main(check_only: bool) -> None:
    model, ckpt = load_model(BEST)
    size = ckpt["model"]["image_size"]
    (test,) = load_splits(("test",), size, ckpt["classes"], load(MemoryParams).budget_gb, "export")
    pixels = test.images[:VERIFY_IMAGES]
    if check_only:
        check = check_committed(model, ckpt["classes"], pixels)
        print(
            f"export check: {ONNX} and its weights agree with {BEST} on {check['images']} test images "
            f"(labels equal, max probability difference {check['max_probability_diff']:.1e})"
        )
        return
    for path in (EVAL_METRICS, CALIBRATION):
        if not path.exists():
            raise UserError(f"{path} not found; run the evaluate stage first (dvc repro evaluate)")
    evaluation = {**json.loads(EVAL_METRICS.read_text()), "calibration": json.loads(CALIBRATION.read_text())}
    data = {
        "train_index_sha256": sha256_file(INDEX / "train.csv"),
        "test_index_sha256": sha256_file(INDEX / "test.csv"),
    }
    check = export_verified(model, ckpt, size, pixels, evaluation, data, MODELS)
    print(
        f"export: {ONNX} verified on {check['images']} test images "
        f"(labels equal, max probability difference {check['max_probability_diff']:.1e})"
    )


def check_only(argv: list[str]) -> bool:
    if argv not in ([], ["--check"]):
        raise UserError(f"unknown arguments {' '.join(argv)}; usage: python stages/export.py [--check]")
    return argv == ["--check"]


if __name__ == "__main__":
    run_main(lambda: main(check_only(sys.argv[1:])))
