"""Data for training and evaluation: each split's images as an ``N x 3 x S x S`` uint8 tensor, or, when that
would not fit ``memory.budget_gb``, as :class:`StreamedImages`, decoded batch by batch.

The images of SIGNS (and of most course-sized data sets) fit in memory many times over once resized, so by
default the files are decoded exactly once per run and every epoch indexes one tensor. Past the budget
(ImageNet-sized sets, large images), batches come from a map-style Dataset over the index with DataLoader
workers. Both decode through :func:`handsigns.imaging.load_rgb` (the path ``predict`` uses) and hand the loop
the same uint8 batches in the same order, so on the CPU a run's results do not depend on the path it took.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from handsigns.errors import UserError
from handsigns.imaging import DECODE_ERRORS, decoders, load_rgb
from handsigns.paths import INDEX, RAW


class StreamedImages(torch.utils.data.Dataset):
    """A split's images, decoded when indexed and never all at once: ``images[i]`` is one ``3 x S x S`` uint8
    tensor (the map-style Dataset a DataLoader's workers read), ``images[idx]`` for a slice or index tensor
    a batch, decoded on threads. Stands in for the in-memory tensor wherever a split's images are read."""

    def __init__(self, paths: list[Path], image_size: int) -> None:
        self.paths, self.image_size = paths, image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index):
        if isinstance(index, slice | torch.Tensor | list):
            picked = range(len(self.paths))[index] if isinstance(index, slice) else torch.as_tensor(index).tolist()
            return decode_all([self.paths[i] for i in picked], self.image_size)
        return decode_all([self.paths[operator.index(index)]], self.image_size, threads=1)[0]

    def __getitems__(self, indices: list[int]) -> torch.Tensor:
        """A whole batch in one call (what a DataLoader worker asks for): one stacked tensor, no per-image
        collation."""
        return decode_all([self.paths[i] for i in indices], self.image_size, threads=1)


Images = torch.Tensor | StreamedImages


def view(images: Images, part: slice) -> Images:
    """``images[part]`` without decoding anything: a view of the in-memory tensor, or the streamed files of
    that part (decoded batch by batch by whoever reads it)."""
    if isinstance(images, StreamedImages):
        return StreamedImages(images.paths[part], images.image_size)
    return images[part]


@dataclass
class Split:
    name: str
    images: Images  # N x 3 x S x S, uint8, RGB: in memory, or decoded when indexed
    labels: torch.Tensor  # N, int64
    paths: list[str]  # relative to the raw folder
    sha256: list[str]  # of each file: what the images are, without decoding them

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def streamed(self) -> bool:
        return isinstance(self.images, StreamedImages)


def take(split: Split, rows: np.ndarray, name: str) -> Split:
    """The images of ``split`` at ``rows``, as a split called ``name`` (streamed stays streamed)."""
    rows = np.asarray(rows, dtype=int)
    images = (
        StreamedImages([split.images.paths[i] for i in rows], split.images.image_size)
        if isinstance(split.images, StreamedImages)
        else split.images[torch.from_numpy(rows)]
    )
    return Split(
        name,
        images,
        split.labels[torch.from_numpy(rows)],
        [split.paths[i] for i in rows],
        [split.sha256[i] for i in rows],
    )


def join(a: Split, b: Split, name: str) -> Split:
    """``a``'s images then ``b``'s, as one split (both in memory or both streamed, as load_splits gives)."""
    images: Images
    if isinstance(a.images, StreamedImages) and isinstance(b.images, StreamedImages):
        images = StreamedImages(a.images.paths + b.images.paths, a.images.image_size)
    elif isinstance(a.images, torch.Tensor) and isinstance(b.images, torch.Tensor):
        images = torch.cat([a.images, b.images])
    else:
        raise ValueError(f"join: {a.name} and {b.name} must be both in memory or both streamed")
    return Split(name, images, torch.cat([a.labels, b.labels]), a.paths + b.paths, a.sha256 + b.sha256)


def read_classes(index_dir: Path = INDEX) -> list[str]:
    path = index_dir / "classes.json"
    if not path.exists():
        raise UserError(f"{path} not found; run the split stage first (dvc repro split)")
    return list(json.loads(path.read_text())["classes"])


def decoded_bytes(index_dir: Path, names: tuple[str, ...], image_size: int) -> int:
    """What the splits ``names`` take decoded in memory (uint8), counted from the index without decoding."""
    rows = 0
    for name in names:
        with open(index_dir / f"{name}.csv", "rb") as fh:
            rows += max(0, sum(1 for _ in fh) - 1)
    return rows * 3 * image_size * image_size


def decode_all(paths: list[Path], image_size: int, threads: int | None = None) -> torch.Tensor:
    """Decode ``paths`` (threads: Pillow releases the GIL) into one ``N x 3 x S x S`` uint8 tensor, each image
    written straight into its row: the peak is the tensor, not the tensor plus copies of it."""
    out = np.empty((len(paths), 3, image_size, image_size), dtype=np.uint8)  # numpy: writable from any thread

    def one(i: int) -> None:
        p = paths[i]
        try:
            pixels = load_rgb(p, image_size, max_megapixels=math.inf)  # split applied data.max_image_megapixels
        except FileNotFoundError:
            raise UserError(f"{p} is listed in the index but missing; re-run the pipeline (dvc repro)") from None
        except DECODE_ERRORS as exc:
            raise UserError(f"{p} can no longer be decoded ({exc}); re-run the pipeline (dvc repro)") from None
        out[i] = pixels.transpose(2, 0, 1)

    threads = threads or min(decoders(), max(len(paths), 1))
    if threads == 1:
        for i in range(len(paths)):
            one(i)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, range(len(paths))))
    return torch.from_numpy(out)


def load_split(
    name: str,
    image_size: int,
    classes: list[str],
    index_dir: Path = INDEX,
    raw_dir: Path = RAW,
    *,
    stream: bool = False,
) -> Split:
    """Split ``name`` of the index: decoded into memory, or with ``stream`` decoded when indexed."""
    path = index_dir / f"{name}.csv"
    if not path.exists():
        raise UserError(f"{path} not found; run the split stage first (dvc repro split)")
    # keep_default_na=False: a class called "NA" or "null" is a name, not a missing value
    df = pd.read_csv(path, dtype={"path": str, "class": str, "sha256": str}, keep_default_na=False)
    label_of = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(df["class"]) - set(label_of))
    if unknown:
        raise UserError(
            f"{path} has class {unknown[0]!r}, which the model does not know ({', '.join(classes)}); "
            "re-run the pipeline (dvc repro)"
        )
    labels = torch.tensor([label_of[c] for c in df["class"]], dtype=torch.int64)
    files = [raw_dir / p for p in df["path"]]
    images = StreamedImages(files, image_size) if stream else decode_all(files, image_size)
    return Split(name, images, labels, list(df["path"]), list(df["sha256"]))


def load_splits(
    names: tuple[str, ...], image_size: int, classes: list[str], budget_gb: float, stage: str
) -> list[Split]:
    """The splits ``names``, all in memory when they fit ``budget_gb`` (``memory.budget_gb``) decoded, else all
    streamed (and one line says so)."""
    need = decoded_bytes(INDEX, names, image_size)
    stream = need > budget_gb * 1e9
    if stream:
        over = f"{need / 1e9:.2f} GB, over memory.budget_gb = {budget_gb:g}"
        print(f"{stage}: {'+'.join(names)} decoded would take {over}: streaming batches from {RAW}/", flush=True)
    return [load_split(name, image_size, classes, stream=stream) for name in names]


STATS_CHUNK = 1024  # images per pass when summing: bounded memory, and exact whatever the chunk


def channel_stats(images: Images) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images, in [0, 1] units, from exact integer sums: the same figures
    in memory or streamed, in any chunking."""
    total, squares, count = [0, 0, 0], [0, 0, 0], 0
    for start in range(0, len(images), STATS_CHUNK):
        x = images[start : start + STATS_CHUNK].to(torch.int64)
        total = [t + int(v) for t, v in zip(total, x.sum(dim=(0, 2, 3)), strict=True)]
        squares = [t + int(v) for t, v in zip(squares, (x * x).sum(dim=(0, 2, 3)), strict=True)]
        count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = [Fraction(t, count * 255) for t in total]
    var = [
        Fraction(q * count - t * t, count * max(count - 1, 1) * 255 * 255) for t, q in zip(total, squares, strict=True)
    ]
    return [round(float(m), 6) for m in mean], [round(max(math.sqrt(v), 1e-6), 6) for v in var]


# ----------------------------------------------------------------------------------------- batch feeding


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """``(start, end)`` of each training batch; a last batch of one image joins the one before it
    (batch norm cannot normalise a single sample)."""
    bounds = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


def _as_is(batch: torch.Tensor) -> torch.Tensor:
    return batch


def _one_thread(_worker: int) -> None:
    torch.set_num_threads(1)  # a decoding worker: the cores belong to the workers side by side and the loop


def batch_pixels(
    split: Split, batches: list[torch.Tensor], device: torch.device, processes: int = 1
) -> Iterator[torch.Tensor]:
    """The uint8 pixels of each batch of indices, in order, on ``device``: indexed from the in-memory tensor,
    or decoded by DataLoader workers (a map-style Dataset read through a batch sampler: the same batches).
    ``processes`` training processes share this machine's cores."""
    if not isinstance(split.images, StreamedImages):
        return (split.images[idx] for idx in batches)
    loader = torch.utils.data.DataLoader(
        split.images,
        batch_sampler=[idx.tolist() for idx in batches],
        num_workers=decoders(processes, spare=1),  # a core left for the loop itself
        pin_memory=device.type == "cuda",
        prefetch_factor=4,
        multiprocessing_context="spawn" if device.type == "cuda" else None,  # no fork after CUDA is up
        generator=torch.Generator(),  # its workers' seed comes from here, not from the global RNG dropout uses
        collate_fn=_as_is,  # type: ignore[arg-type]  # already one tensor (StreamedImages.__getitems__), not a list
        worker_init_fn=_one_thread,
    )
    return (x.to(device, non_blocking=True) for x in loader)
