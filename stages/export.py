"""DVC stage `export`: models/model.safetensors, models/model.onnx and models/model.json (model card),
verified: ONNX Runtime on the real test images must give PyTorch's labels and probabilities within 1e-4."""

import json
from pathlib import Path

from handsigns.data import INDEX_DIR, load_split
from handsigns.errors import run_main
from handsigns.export import deployed, model_card, save_onnx, save_safetensors, sha256_of, verify, write_card
from handsigns.train import BEST, load_model

MODELS = Path("models")


def main() -> None:
    model, ckpt = load_model(BEST)
    module = deployed(model, ckpt["normalisation"])
    size = ckpt["model"]["image_size"]
    save_safetensors(module, MODELS / "model.safetensors",
                     {"classes": json.dumps(ckpt["classes"]), "image_size": str(size)})
    save_onnx(module, size, MODELS / "model.onnx")
    test = load_split("test", size, ckpt["classes"])
    check = verify(module, MODELS / "model.onnx", test.images)
    metrics = json.loads(Path("metrics/eval.json").read_text())
    summary = {s: {k: metrics[s][k] for k in ("accuracy", "loss", "macro_f1")} for s in ("val", "test")}
    card = model_card(ckpt, size, summary, sha256_of(INDEX_DIR / "train.csv"), check)
    write_card(MODELS / "model.json", card)
    print(f"export: models/model.onnx verified on {check['images']} test images "
          f"(labels equal, max probability difference {check['max_probability_diff']:.1e})")


if __name__ == "__main__":
    run_main(main)
