"""Where the model looks (handsigns.saliency): on a generated set whose class is decided by a shape drawn in a
known box, among clutter that says nothing of the class, the occlusion map's mass falls in the box; and
`handsigns predict --explain DIR` writes one overlay per image."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw

from handsigns import Predictor
from handsigns.saliency import occlusion

from conftest import train_and_export

SIDE, BOX = 32, (2, 2, 14, 14)  # the shape is drawn inside BOX (x0, y0, x1, y1): 14 % of the image


def boxed_shapes(raw, per_class: int, start: int, seed: int) -> list[str]:
    """Class "square": a filled square in BOX; "cross": a plus sign in BOX. Everywhere else, random coloured
    rectangles (the same kind for both classes) on noise."""
    rng = np.random.default_rng(seed)
    names = []
    for cls in ("square", "cross"):
        (raw / cls).mkdir(parents=True, exist_ok=True)
        for i in range(start, start + per_class):
            img = Image.fromarray(rng.integers(0, 60, (SIDE, SIDE, 3), dtype=np.uint8))
            draw = ImageDraw.Draw(img)
            for _ in range(3):  # clutter, kept out of the box
                x0, y0 = int(rng.integers(BOX[2] + 1, SIDE - 8)), int(rng.integers(0, SIDE - 8))
                colour = tuple(int(c) for c in rng.integers(80, 256, 3))
                draw.rectangle((x0, y0, x0 + int(rng.integers(3, 8)), y0 + int(rng.integers(3, 8))), fill=colour)
            dx, dy = (int(v) for v in rng.integers(0, 3, 2))
            x0, y0 = BOX[0] + dx, BOX[1] + dy
            if cls == "square":
                draw.rectangle((x0 + 1, y0 + 1, x0 + 8, y0 + 8), fill=(255, 255, 255))
            else:
                draw.rectangle((x0 + 4, y0, x0 + 5, y0 + 9), fill=(255, 255, 255))
                draw.rectangle((x0, y0 + 4, x0 + 9, y0 + 5), fill=(255, 255, 255))
            img.save(raw / cls / f"{i:03d}.png")
            names.append(f"{cls}/{i:03d}.png")
    return names


@pytest.fixture(scope="module")
def boxed_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("boxed")
    raw = root / "data/raw"
    files = {"train": boxed_shapes(raw, 60, 0, seed=1), "test": boxed_shapes(raw, 10, 100, seed=2)}
    recipe = {"epochs": 12, "model": {"image_size": SIDE, "num_channels": 8}, "train": {"augment": False}}
    return train_and_export(root, ["cross", "square"], files, recipe)


def test_the_occlusion_map_falls_on_the_shape_that_decides_the_class(boxed_model):
    predictor = Predictor(boxed_model.onnx)
    inside = np.zeros((SIDE, SIDE), bool)
    inside[BOX[1] : BOX[3], BOX[0] : BOX[2]] = True
    shares, right = [], 0
    for path in boxed_model.photos["test"]:
        prediction, heat = predictor.explain(str(path))
        assert heat.shape == (SIDE, SIDE) and heat.min() >= 0 and heat.max() == pytest.approx(1.0)
        right += prediction.label == path.parent.name
        shares.append(heat[inside].sum() / heat.sum())
    assert right >= 18, right  # of 20: a model that has learnt the task, else the map means nothing
    assert np.mean(shares) >= 0.6, np.round(shares, 2)  # the box is 14 % of the image


def test_the_map_is_for_the_class_asked(boxed_model):
    predictor = Predictor(boxed_model.onnx)
    pixels = predictor.pixels(str(boxed_model.photos["test"][0]))
    heat, target = occlusion(predictor, pixels)
    assert target == int(np.argmax(predictor.probabilities(pixels[None])[0]))
    other, asked = occlusion(predictor, pixels, target=1 - target)
    assert asked == 1 - target and not np.array_equal(heat, other)


def test_predict_explain_writes_one_overlay_per_image_and_the_same_labels(boxed_model, tmp_path):
    images = [str(p) for p in boxed_model.photos["test"][:3]]
    cmd = [sys.executable, "-m", "handsigns.cli", "predict", "--model", str(boxed_model.onnx), *images]
    plain = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    explained = subprocess.run([*cmd, "--explain", str(tmp_path / "maps")], capture_output=True, text=True, check=True)
    assert explained.stdout == plain
    written = sorted(p.name for p in (tmp_path / "maps").iterdir())
    assert written == sorted(f"{'__'.join(p.parts[1:])[:-4]}.png" for p in map(type(tmp_path), images))
    with Image.open(tmp_path / "maps" / written[0]) as overlay:
        assert overlay.size == ((2 * SIDE + 2) * 4, SIDE * 4)  # image | map, 4x
