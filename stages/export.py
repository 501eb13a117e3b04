"""DVC stage `export`: models/model.safetensors, models/model.onnx and models/model.json (model card),
verified: ONNX Runtime on the real test images must give PyTorch's labels and probabilities within 1e-4 and,
with the out-of-distribution check (ood.check), its flags and scores.

``python stages/export.py --check`` writes nothing: it re-runs that check on an export already there (one
pulled from a DVC remote, made on another machine) against models/best.pt (``handsigns gate --verify``).
"""

import json
import sys

from handsigns import ood
from handsigns.checkpoint import load_model
from handsigns.dataset import load_splits
from handsigns.errors import UserError, run_main
from handsigns.export import check_committed, export_verified
from handsigns.files import sha256_file
from handsigns.params import load
from handsigns.params.memory import MemoryParams
from handsigns.params.recipe import RecipeParams
from handsigns.paths import BEST, CALIBRATION, EVAL_METRICS, INDEX, MODELS, ONNX, OOD_REPORT

VERIFY_IMAGES = 1024  # the first test images (all of SIGNS's 120): parity holds or fails on a few hundred


def main(check_only: bool) -> None:
    model, ckpt = load_model(BEST)
    size, classes, recipe = ckpt["model"]["image_size"], ckpt["classes"], load(RecipeParams)
    names = ("test", "train", "val") if recipe.ood.check else ("test",)
    splits = dict(zip(names, load_splits(names, size, classes, load(MemoryParams).budget_gb, "export"), strict=True))
    pixels = splits["test"].images[:VERIFY_IMAGES]
    detector = None
    if recipe.ood.check:  # refitted as evaluate fitted it: the same images through the same model
        batch, most = recipe.evaluate.batch_size, recipe.ood.max_val_flagged
        detector = ood.fit_model(model, splits["train"], splits["val"], len(classes), most, batch)
    if check_only:
        check = check_committed(model, classes, pixels, detector)
        print(
            f"export check: {ONNX} and its weights agree with {BEST} on {check['images']} test images "
            f"(labels equal, max probability difference {check['max_probability_diff']:.1e})"
        )
        return
    for path in (EVAL_METRICS, CALIBRATION, OOD_REPORT):
        if not path.exists():
            raise UserError(f"{path} not found; run the evaluate stage first (dvc repro evaluate)")
    evaluation = {**json.loads(EVAL_METRICS.read_text()), "calibration": json.loads(CALIBRATION.read_text())}
    evaluation["ood"] = ood_report(detector)
    data = {
        "train_index_sha256": sha256_file(INDEX / "train.csv"),
        "test_index_sha256": sha256_file(INDEX / "test.csv"),
    }
    check = export_verified(model, ckpt, pixels, evaluation, data, MODELS, detector=detector)
    print(
        f"export: {ONNX} verified on {check['images']} test images "
        f"(labels equal, max probability difference {check['max_probability_diff']:.1e})"
    )


def ood_report(detector: ood.Detector | None) -> dict:
    """Evaluate's metrics/eval/ood.json, once it is known to describe ``detector`` (the same check, the same
    threshold): the card carries its figures."""
    report = json.loads(OOD_REPORT.read_text())
    if report.get("check") != (detector is not None) or (
        detector is not None and report.get("threshold_distance") != float(f"{detector.threshold:.6g}")
    ):
        raise UserError(f"{OOD_REPORT} was not made with this model and ood params; re-run dvc repro evaluate")
    return report


def check_only(argv: list[str]) -> bool:
    if argv not in ([], ["--check"]):
        raise UserError(f"unknown arguments {' '.join(argv)}; usage: python stages/export.py [--check]")
    return argv == ["--check"]


if __name__ == "__main__":
    run_main(lambda: main(check_only(sys.argv[1:])))
