"""Odd image files made by hand: 16-bit PNGs, CMYK, palette transparency, EXIF rotation, trailing bytes, text
named .jpg; each made from :data:`RGB`, so what loading them gives can be compared with it."""

import struct
import zlib

import numpy as np
from PIL import Image

RGB = np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)  # 40 rows, 30 columns


def png16(pixels: np.ndarray) -> bytes:
    """A 16-bit-per-channel PNG (RGB or RGBA), written by hand: Pillow cannot save one."""
    height, width, channels = pixels.shape

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    colour_type = {3: 2, 4: 6}[channels]
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in pixels)  # filter 0, big-endian samples
    ihdr = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def write_odd_files(folder):
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(RGB).save(folder / "plain.png")
    Image.fromarray(RGB).convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    grey = np.asarray(Image.fromarray(RGB).convert("L"), dtype=np.uint16)
    Image.fromarray(grey * 257).save(folder / "grey16.png")  # 16-bit: v * 257 keeps the 8-bit value on top
    (folder / "rgb16.png").write_bytes(png16(RGB.astype(np.uint16) * 257))
    opaque = np.dstack([RGB, np.full(RGB.shape[:2], 255, np.uint8)]).astype(np.uint16) * 257
    (folder / "rgba16.png").write_bytes(png16(opaque))
    Image.fromarray(RGB).convert("P").save(folder / "palette_transparent.png", transparency=0)
    Image.fromarray(RGB).convert("LA").save(folder / "la.png")
    rotated = Image.fromarray(RGB)
    exif = rotated.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    rotated.save(folder / "exif_rotated.jpg", exif=exif, quality=95)
    Image.fromarray(RGB).save(folder / "clean.jpg", quality=95)
    Image.fromarray(RGB).save(folder / "trailing_garbage.jpg", quality=95)
    with open(folder / "trailing_garbage.jpg", "ab") as fh:
        fh.write(b"\x00garbage after the end-of-image marker" * 50)
    (folder / "zero_bytes.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("this is a text file named .jpg\n")
    Image.fromarray(RGB).save(folder / "png_named.jpg", format="PNG")
    return folder
