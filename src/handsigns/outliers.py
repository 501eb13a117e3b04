"""Pictures that are not of the data set, made without the internet: what the out-of-distribution check
(:mod:`handsigns.ood`) is judged on by the evaluate stage, the tests and the benchmarks.

Five sets, each seeded, so every run judges the check on the same pictures: uniform noise, smooth random
textures, flat shapes, printed words, and crops of the real photos that the project's own dependencies ship
(scikit-learn's sample images and Matplotlib's sample data: a Chinese temple, a flower, a portrait, a toy box).
None of them is a hand; none of them knows which data set the model learnt, so they judge any model alike.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from handsigns.imaging import fit

SIDE = 96  # drawn at this size, then resized to the model's as every image is (imaging.fit)
WORDS = ("hand", "sign", "photo", "model", "data", "zero", "one", "two", "three", "five", "uno", "dos", "cinco", "hola")


def _colour(rng: np.random.Generator, lo: int = 0, hi: int = 256) -> tuple[int, int, int]:
    r, g, b = (int(v) for v in rng.integers(lo, hi, 3))
    return r, g, b


def noise(rng: np.random.Generator) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8))


def texture(rng: np.random.Generator) -> Image.Image:
    """Noise blurred at a random scale, stretched to a random mean colour and contrast."""
    blurred = noise(rng).filter(ImageFilter.GaussianBlur(float(rng.uniform(1, 8))))
    a = np.asarray(blurred, dtype=np.float64)
    a = (a - a.mean()) / (a.std() + 1e-6) * rng.uniform(20, 70) + rng.uniform(40, 215, 3)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def shapes(rng: np.random.Generator) -> Image.Image:
    image = Image.new("RGB", (SIDE, SIDE), _colour(rng))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(1, 6))):
        x0, y0 = (int(v) for v in rng.integers(0, SIDE - 16, 2))
        box = [x0, y0, x0 + int(rng.integers(8, 60)), y0 + int(rng.integers(8, 60))]
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=_colour(rng))
    return image


def text(rng: np.random.Generator) -> Image.Image:
    image = Image.new("RGB", (SIDE, SIDE), _colour(rng, 150))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=int(rng.integers(12, 28)))
    for row in range(int(rng.integers(1, 5))):
        words = " ".join(str(w) for w in rng.choice(WORDS, 2))
        draw.text((int(rng.integers(0, 20)), 5 + row * 22), words, fill=_colour(rng, 0, 100), font=font)
    return image


def sample_photos() -> list[Path]:
    """The real photos shipped inside scikit-learn and Matplotlib (both dependencies of the pipeline)."""
    import importlib.util

    import matplotlib

    # Found, not imported: importing scikit-learn takes a second, and only its files are needed here.
    sklearn = importlib.util.find_spec("sklearn")
    if sklearn is None or not sklearn.submodule_search_locations:
        raise ModuleNotFoundError("scikit-learn is not installed: the pipeline's sample photos come with it")
    sklearn_images = Path(sklearn.submodule_search_locations[0]) / "datasets/images"
    matplotlib_images = Path(matplotlib.get_data_path()) / "sample_data"
    return [
        sklearn_images / "china.jpg",
        sklearn_images / "flower.jpg",
        matplotlib_images / "grace_hopper.jpg",
        matplotlib_images / "Minduka_Present_Blue_Pack.png",
    ]


def photo_crops(rng: np.random.Generator, n: int) -> list[Image.Image]:
    """``n`` random square crops (30-100 % of the short side) of the sample photos, taken in turn."""
    photos = []
    for path in sample_photos():
        with Image.open(path) as opened:
            photos.append(opened.convert("RGB"))
    out = []
    for i in range(n):
        image = photos[i % len(photos)]
        w, h = image.size
        side = int(min(w, h) * rng.uniform(0.3, 1.0))
        x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        out.append(image.crop((x, y, x + side, y + side)))
    return out


DRAWN: dict[str, Callable[[np.random.Generator], Image.Image]] = {
    "noise": noise,
    "texture": texture,
    "shapes": shapes,
    "text": text,
}


def sets(image_size: int, per_set: int = 100, seed: int = 0) -> dict[str, np.ndarray]:
    """Each set's ``per_set`` pictures as the model takes them: N x S x S x 3 uint8, S = ``image_size``."""
    out = {}
    for i, (name, draw) in enumerate(DRAWN.items()):
        rng = np.random.default_rng([seed, i])
        out[name] = [draw(rng) for _ in range(per_set)]
    out["photos"] = photo_crops(np.random.default_rng([seed, len(DRAWN)]), per_set)
    return {name: np.stack([np.asarray(fit(i, image_size)) for i in found]) for name, found in out.items()}
