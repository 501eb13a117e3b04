"""Data for training and evaluation: each split decoded once into an in-memory uint8 tensor.

The images of SIGNS (and of most course-sized data sets) fit in memory many times over once resized, so
the JPEGs are decoded exactly once per run (through :func:`handsigns.imaging.load_rgb`, the same path
``predict`` uses) and every epoch indexes a ``N x 3 x S x S`` uint8 tensor.
"""

from __future__ import annotations

import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from handsigns.errors import UserError
from handsigns.imaging import DECODE_ERRORS, load_rgb
from handsigns.paths import INDEX, RAW


@dataclass
class Split:
    name: str
    images: torch.Tensor  # N x 3 x S x S, uint8, RGB
    labels: torch.Tensor  # N, int64
    paths: list[str]  # relative to the raw folder

    def __len__(self) -> int:
        return len(self.labels)


def read_classes(index_dir: Path = INDEX) -> list[str]:
    path = index_dir / "classes.json"
    if not path.exists():
        raise UserError(f"{path} not found; run the split stage first (dvc repro split)")
    return list(json.loads(path.read_text())["classes"])


def decode_all(paths: list[Path], image_size: int) -> torch.Tensor:
    """Decode ``paths`` (threads: Pillow releases the GIL) into one ``N x 3 x S x S`` uint8 tensor."""

    def one(p: Path) -> np.ndarray:
        try:
            return load_rgb(p, image_size, max_megapixels=math.inf)  # split applied data.max_image_megapixels
        except FileNotFoundError:
            raise UserError(f"{p} is listed in the index but missing; re-run the pipeline (dvc repro)") from None
        except DECODE_ERRORS as exc:
            raise UserError(f"{p} can no longer be decoded ({exc}); re-run the pipeline (dvc repro)") from None

    if not paths:
        return torch.zeros((0, 3, image_size, image_size), dtype=torch.uint8)
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        arrays = list(pool.map(one, paths))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def load_split(name: str, image_size: int, classes: list[str], index_dir: Path = INDEX, raw_dir: Path = RAW) -> Split:
    path = index_dir / f"{name}.csv"
    if not path.exists():
        raise UserError(f"{path} not found; run the split stage first (dvc repro split)")
    # keep_default_na=False: a class called "NA" or "null" is a name, not a missing value
    df = pd.read_csv(path, dtype={"path": str, "class": str, "label": np.int64}, keep_default_na=False)
    label_of = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(df["class"]) - set(label_of))
    if unknown:
        raise UserError(
            f"{path} has class {unknown[0]!r}, which the model does not know ({', '.join(classes)}); "
            "re-run the pipeline (dvc repro)"
        )
    labels = torch.tensor([label_of[c] for c in df["class"]], dtype=torch.int64)
    images = decode_all([raw_dir / p for p in df["path"]], image_size)
    return Split(name, images, labels, list(df["path"]))


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images, in [0, 1] units (computed in float64: reproducible)."""
    x = images.to(torch.float64).div_(255.0)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-6)
    return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]
