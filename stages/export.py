"""DVC stage `export`: models/model.safetensors, models/model.onnx and models/model.json (model card),
verified: ONNX Runtime on the real test images must give PyTorch's labels and probabilities within 1e-4."""

import json
from pathlib import Path

from handsigns.data import INDEX_DIR, load_split
from handsigns.errors import run_main
from handsigns.export import deployed, export_verified, sha256_of
from handsigns.train import BEST, load_model

MODELS = Path("models")


def main() -> None:
    model, ckpt = load_model(BEST)
    module = deployed(model, ckpt["normalisation"])
    size = ckpt["model"]["image_size"]
    test = load_split("test", size, ckpt["classes"])
    metrics = json.loads(Path("metrics/eval.json").read_text())
    summary = {s: {k: metrics[s][k] for k in ("accuracy", "loss", "macro_f1")} for s in ("val", "test")}
    check = export_verified(module, ckpt, size, test.images, summary, sha256_of(INDEX_DIR / "train.csv"), MODELS)
    print(f"export: models/model.onnx verified on {check['images']} test images "
          f"(labels equal, max probability difference {check['max_probability_diff']:.1e})")


if __name__ == "__main__":
    run_main(main)
