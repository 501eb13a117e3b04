"""Look-alike images are not copies: a set of many small, simple, distinct images of a few strokes
each, like scanned digits, splits at the asked fractions with no duplicate reported, while re-encoded,
resized and brightened copies planted in it are still caught."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from handsigns.params.data import DataParams
from handsigns.split import build_index

CLASSES, PER_CLASS = 10, 60


def scribble(rng: np.random.Generator, strokes: np.ndarray) -> Image.Image:
    """One writing of a class's strokes: endpoints moved by a pixel or two, drawn at 32 px, scanned at 8x8
    in 17 grey levels (as the UCI digits), shown at 32 px."""
    canvas = Image.new("L", (32, 32))
    draw = ImageDraw.Draw(canvas)
    for x0, y0, x1, y1 in strokes + rng.normal(0, 1.5, strokes.shape):
        draw.line((x0, y0, x1, y1), fill=int(rng.integers(190, 256)), width=int(rng.integers(3, 6)))
    scan = np.asarray(canvas.resize((8, 8), Image.Resampling.BOX), np.float64)
    levels = (np.round(scan / 255 * 16) * 255 / 16).astype(np.uint8)
    return Image.fromarray(levels).resize((32, 32), Image.Resampling.NEAREST)


def lookalikes(root: Path) -> Path:
    """``CLASSES`` class folders of ``PER_CLASS`` distinct scribbles each, no split given."""
    rng = np.random.default_rng(21)
    for c in range(CLASSES):
        strokes = rng.uniform(6, 26, (3, 4))  # the class: three strokes
        (root / f"c{c}").mkdir(parents=True)
        for k in range(PER_CLASS):
            scribble(rng, strokes).save(root / f"c{c}" / f"{k:03d}.png")
    return root


def old_hash_pairs(root: Path) -> int:
    """Pairs within 17 of 256 bits of the 16x16 difference hash the split used before commit 9f15b5d."""
    bits = []
    for path in sorted(root.rglob("*.png")):
        grey = np.asarray(Image.open(path).convert("L").resize((17, 16), Image.Resampling.BOX), np.int16)
        bits.append((grey[:, 1:] > grey[:, :-1]).ravel())
    b = np.array(bits, np.int16)
    distance = (b[:, None, :] != b[None, :, :]).sum(-1)
    return int((np.triu(distance <= 17, 1)).sum())


def test_look_alikes_split_at_the_asked_fractions_and_none_is_a_duplicate(tmp_path):
    raw = lookalikes(tmp_path / "raw")
    assert old_hash_pairs(raw) > 1000  # the set the old hash chained: it is hard for this reason
    res = build_index(raw, DataParams(source="x"))
    m = res.metrics
    assert m["duplicate_pairs"] == {"exact": 0, "near": 0} and res.excluded.empty
    assert m["near_duplicate_groups_dissolved"] == {"groups": 0, "largest": 0}
    for c in range(CLASSES):  # 10 % test, then 20 % of the rest val, per class, to the image
        per = {s: m["per_class"][s][f"c{c}"] for s in ("train", "val", "test")}
        assert per == {"train": 43, "val": 11, "test": 6}


def jpeg(img: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    img.save(out, "JPEG", quality=quality)
    return out.getvalue()


def test_copies_among_look_alikes_are_still_caught(tmp_path):
    raw = lookalikes(tmp_path / "raw")
    a, b, c = (Image.open(raw / f"c{k}" / "000.png") for k in (1, 2, 3))
    (raw / "c1" / "zz_reencoded.jpg").write_bytes(jpeg(a, 90))
    b.resize((96, 96), Image.Resampling.BILINEAR).save(raw / "c2" / "zz_resized.png")
    Image.fromarray(np.minimum(np.asarray(c, np.int16) + 25, 255).astype(np.uint8)).save(raw / "c3" / "zz_bright.png")
    res = build_index(raw, DataParams(source="x", dedupe="report"))
    near = res.duplicates[res.duplicates.kind == "near"]
    assert sorted(zip(near.path_a, near.path_b, strict=True)) == [
        ("c1/000.png", "c1/zz_reencoded.jpg"),
        ("c2/000.png", "c2/zz_resized.png"),
        ("c3/000.png", "c3/zz_bright.png"),
    ]
    assert near.joined.all() and (near.difference <= 0.03).all()
