"""Raw data trees written for build_index(): the course's layout (``{split}_signs/{label}_IMG_n.jpg``) and
ImageFolder, each image generated from its path (or a seed), so a copy is a copy only when a test makes one."""

from __future__ import annotations

import zlib
from pathlib import Path

from conftest import write_image

LABELS = "012345"


def seed_of(name: str) -> int:
    return zlib.crc32(name.encode())


def img(raw: Path, rel: str, seed: int | None = None, **kw) -> Path:
    """A generated image at ``raw/rel``; its content depends only on ``seed`` (default: on ``rel``)."""
    return write_image(raw / rel, seed_of(rel) if seed is None else seed, **kw)


def put(raw: Path, rel: str, data: bytes) -> Path:
    path = raw / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def cs230(raw: Path, counts: dict[str, int], labels: str = LABELS, wrapper: str = "64x64_SIGNS") -> Path:
    """``{split}_signs/{label}_IMG_{n}.jpg`` (every third name with a space, as in the real data)."""
    base = raw / wrapper if wrapper else raw
    n = 5000
    for split, per_class in counts.items():
        for label in labels:
            for _ in range(per_class):
                n += 1
                name = f"{label}_IMG_{n} (1).jpg" if n % 3 == 0 else f"{label}_IMG_{n}.jpg"
                write_image(base / f"{split}_signs" / name, seed_of(f"{split}/{name}"), 64)
    return raw


def imagefolder(raw: Path, classes: list[str], per_class: int, split: str | None = None) -> Path:
    prefix = f"{split}/" if split else ""
    for cls in classes:
        for k in range(per_class):
            img(raw, f"{prefix}{cls}/{cls}_{k:03d}.png")
    return raw


def on_disk(raw: Path) -> list[str]:
    return sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*") if p.is_file())
