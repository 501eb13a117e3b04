"""Image decoding and perceptual hashing with Pillow and NumPy only (no torch: ``predict`` uses this too).

Training, evaluation, export checks and prediction all decode through :func:`load_rgb`, so a model sees
the same pixels in every one of them.
"""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
THUMB_SIZE = 16  # duplicates are compared as 16x16 grey thumbnails (handsigns.neardup: why 16 keeps it exact)
THUMB_DRAFT = 256  # JPEGs are decoded DCT-scaled to >= 256 px for that (3024 px photo: 8 ms, not 38)
# The decompression-bomb guard: an image whose header claims more pixels is refused before it is decoded. 50 MP
# passes a 48 MP phone photo and refuses 8,000 x 8,000 (a few KB of JPEG can claim that: 192 MB decoded).
MAX_MEGAPIXELS = 50.0  # Pillow's own refusal, above ~179 MP at open, stays the ceiling whatever the limit
MAX_DECODERS = 8  # past this, decoding is bound by memory bandwidth and the consumer, not by cores


class ImageTooLarge(ValueError):
    """An image whose header claims more pixels than the limit: refused undecoded."""


DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def decoders(processes: int = 1, spare: int = 0) -> int:
    """How many threads or worker processes decode images side by side: this process's share of the cores
    (``processes`` share the machine), less ``spare`` left for other work; 1 to :data:`MAX_DECODERS`."""
    return max(1, min(MAX_DECODERS, (os.cpu_count() or 1) // processes - spare))


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def to_rgb(img: Image.Image) -> Image.Image:
    """Upright RGB: EXIF orientation applied; 16-bit grey scaled to 8 bits; alpha composited over white;
    grey/palette/CMYK converted."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):  # 16-bit grey (PNG, TIFF): keep the top 8 bits
        # (Pillow's own convert("RGB") clips every value above 255 to white)
        img = Image.fromarray((np.asarray(img, dtype=np.uint32) >> 8).clip(0, 255).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB") if img.mode != "RGB" else img


def _too_large(width: int, height: int, max_megapixels: float) -> ImageTooLarge:
    size = f"{width}x{height} is {width * height / 1e6:.1f} megapixels"
    return ImageTooLarge(f"{size}, over the limit of {max_megapixels:g} (a decompression-bomb guard); not decoded")


def open_image(
    source: str | os.PathLike[str] | bytes,
    size: int | None = None,
    *,
    draft: int | None = None,
    max_megapixels: float = MAX_MEGAPIXELS,
) -> Image.Image:
    """Decode fully (so corrupt data fails here, not later) and return upright RGB, resized to ``size`` when
    given. JPEGs are decoded DCT-scaled to no less than ``draft`` (default ``size``) pixels, which makes big
    photos fast. ``info["source_size"]`` keeps the file's own (width, height). An image whose header claims
    more than ``max_megapixels`` raises :class:`ImageTooLarge` before any pixel is decoded."""
    fp = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        img = Image.open(fp)
    except Image.DecompressionBombError as exc:  # over Pillow's own ceiling: refused the same way
        raise ImageTooLarge(f"{exc}; not decoded") from None
    with img:
        source_size = img.size
        if source_size[0] * source_size[1] > max_megapixels * 1e6:
            raise _too_large(*source_size, max_megapixels)
        draft = draft if draft is not None else size
        if draft is not None and img.format == "JPEG":
            img.draft("RGB", (draft, draft))
        img.load()
        return fit(img, size, source_size)


def fit(img: Image.Image, size: int | None, source_size: tuple[int, int] | None = None) -> Image.Image:
    """A decoded image as the model takes it: upright RGB (:func:`to_rgb`), resized to ``size`` (Pillow
    bilinear) when given. ``info["source_size"]`` keeps the original (width, height)."""
    source_size = source_size or img.size
    rgb = to_rgb(img)
    if size is not None and rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
    rgb.info["source_size"] = source_size
    return rgb


def load_rgb(
    source: str | os.PathLike[str] | bytes, size: int, *, max_megapixels: float = MAX_MEGAPIXELS
) -> np.ndarray:
    """An image as a ``size x size x 3`` uint8 array: the one decoding path of the whole project."""
    return np.asarray(open_image(source, size, max_megapixels=max_megapixels), dtype=np.uint8)


def thumbnail(img: Image.Image) -> np.ndarray:
    """The image as duplicate detection compares it: 16x16 grey (box-averaged), 256 uint8 values."""
    grey = img.convert("L").resize((THUMB_SIZE, THUMB_SIZE), Image.Resampling.BOX)
    return np.asarray(grey, dtype=np.uint8).reshape(-1)
