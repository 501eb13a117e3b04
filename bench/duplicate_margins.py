"""Benchmark (not a test): the margins of the near-duplicate rule (handsigns.neardup) on real and generated sets.

For each set: the pairs of distinct images that the absolute limit alone (``data.near_duplicate_max_difference``)
accepts, and how far apart each pair is relative to the two images' detail (RMS difference over RMS detail,
:func:`handsigns.neardup.detail`). On SIGNS and its grey copy these pairs are burst shots, which the rule must
keep; on the generated sets (all images distinct) they are look-alikes, which it must reject. The limit
(0.3) has to sit between the largest ratio of the first kind and the smallest of the second. Last, copies
made to order from 300 images of each set (JPEG 50 and 75, half and quarter size, 10 % brighter, 10 % more
contrast): the largest difference and ratio, i.e. which copies the rule still catches.

    .venv/bin/python bench/duplicate_margins.py [--sets signs,grey-lowres,shapes-few,glyphs-26,letters-small,digits]

The sets are bench/generality.py's, built in its --work folder (/tmp/handsigns-generality) when missing. About
a minute on two cores.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

import handsigns.neardup as neardup
from handsigns.imaging import thumbnail
from handsigns.neardup import detail, difference, near_pairs

sys.path.insert(0, str(Path(__file__).parent))
from generality import ensure_set

KEEP = {"signs", "grey-lowres"}  # their pairs are burst shots: the same pose, shot in a row


def ratio(a: np.ndarray, b: np.ndarray) -> float:
    """RMS difference (brightness offset removed) over the two images' RMS detail."""
    both = np.sqrt((detail(a) ** 2 + detail(b) ** 2) / 2)
    return difference(a, b) / both if both > 0 else float("inf")


def copies(img: Image.Image) -> dict[str, Image.Image]:
    def jpeg(q: int) -> Image.Image:
        out = io.BytesIO()
        img.save(out, "JPEG", quality=q)
        return Image.open(out).convert("RGB")

    w, h = img.size
    return {
        "jpeg50": jpeg(50),
        "jpeg75": jpeg(75),
        "half": img.resize((w // 2, h // 2), Image.Resampling.BILINEAR),
        "quarter": img.resize((w // 4, h // 4), Image.Resampling.BOX),
        "bright10": ImageEnhance.Brightness(img).enhance(1.1),
        "contrast10": ImageEnhance.Contrast(img).enhance(1.1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="signs,grey-lowres,shapes-few,glyphs-26,letters-small,digits")
    ap.add_argument("--work", type=Path, default=Path("/tmp/handsigns-generality"))
    ap.add_argument("--max-difference", type=float, default=0.03)
    args = ap.parse_args()
    print("| set | images | pairs under the absolute limit | their ratio to detail: min, max | kind |")
    print("|---|---:|---:|---:|---|")
    worst_copies = {}
    for name in args.sets.split(","):
        files = sorted(p for p in ensure_set(name, args.work / "sets").rglob("*") if p.is_file())
        imgs = [Image.open(p).convert("RGB") for p in files]
        thumbs = np.stack([thumbnail(i) for i in imgs])
        distinct = np.unique(thumbs, axis=0, return_index=True)[1]  # byte-identical copies are not the question
        thumbs = thumbs[np.sort(distinct)]
        saved, neardup._RELATIVE = neardup._RELATIVE, (64, 1)  # the absolute limit alone
        try:
            pairs = near_pairs(thumbs, args.max_difference)
        finally:
            neardup._RELATIVE = saved
        ratios = [ratio(thumbs[i], thumbs[j]) for i, j, _ in pairs]
        span = f"{min(ratios):.3f}, {max(ratios):.3f}" if ratios else "—"
        kind = "burst shots: keep" if name in KEEP else "distinct look-alikes: reject"
        print(f"| {name} | {len(thumbs)} | {len(pairs)} | {span} | {kind} |", flush=True)
        rng = np.random.default_rng(0)
        for k in rng.choice(len(imgs), min(300, len(imgs)), replace=False):
            t0 = thumbnail(imgs[k])
            for what, img in copies(imgs[k]).items():
                t = thumbnail(img)
                d, r = difference(t0, t), ratio(t0, t)
                old = worst_copies.get((name, what), (0.0, 0.0))
                worst_copies[name, what] = (max(old[0], d), max(old[1], r))
    print("\n| set | copy | largest difference | largest ratio to detail |\n|---|---|---:|---:|")
    for (name, what), (d, r) in worst_copies.items():
        print(f"| {name} | {what} | {d:.4f} | {r:.3f} |")


if __name__ == "__main__":
    main()
