"""DVC stage `export`: models/model.safetensors, models/model.onnx and models/model.json (model card),
verified: ONNX Runtime on the real test images must give PyTorch's labels and probabilities within 1e-4."""

import json
from pathlib import Path

from handsigns.data import INDEX_DIR, load_split
from handsigns.errors import UserError, run_main
from handsigns.export import deployed, export_verified
from handsigns.sources import sha256_file
from handsigns.train import BEST, load_model

MODELS = Path("models")


def main() -> None:
    model, ckpt = load_model(BEST)
    module = deployed(model, ckpt["normalisation"])
    size = ckpt["model"]["image_size"]
    test = load_split("test", size, ckpt["classes"])
    eval_path = Path("metrics/eval.json")
    if not eval_path.exists():
        raise UserError(f"{eval_path} not found; run the evaluate stage first (dvc repro evaluate)")
    metrics = json.loads(eval_path.read_text())
    summary = {s: {k: metrics[s][k] for k in ("accuracy", "loss", "macro_f1")} for s in ("val", "test")}
    data = {"train_index_sha256": sha256_file(INDEX_DIR / "train.csv"),
            "test_index_sha256": sha256_file(INDEX_DIR / "test.csv")}
    check = export_verified(module, ckpt, size, test.images, summary, data, MODELS)
    print(f"export: models/model.onnx verified on {check['images']} test images "
          f"(labels equal, max probability difference {check['max_probability_diff']:.1e})")


if __name__ == "__main__":
    run_main(main)
