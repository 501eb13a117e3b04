"""Odd image files: each is converted the one way training and predict share (`imaging.load_rgb`), or reported
by name. Generated here; compared with the plain 8-bit RGB picture they were made from."""

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from handsigns.errors import UserError
from handsigns.imaging import DECODE_ERRORS, MAX_MEGAPIXELS, ImageTooLarge, load_rgb, open_image
from handsigns.params.data import DataParams
from handsigns.split import build_index

from conftest import bomb_jpeg, write_image

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


def test_each_odd_file_is_converted_or_refused(tmp_path):
    d = write_odd_files(tmp_path / "odd")
    plain = load_rgb(d / "plain.png", 16).astype(int)
    near = lambda name, tol: np.abs(load_rgb(d / name, 16).astype(int) - plain).mean() < tol  # noqa: E731
    assert near("cmyk.jpg", 8)  # a JPEG round trip without chroma subsampling: a small error
    assert np.array_equal(load_rgb(d / "trailing_garbage.jpg", 16), load_rgb(d / "clean.jpg", 16))
    assert np.array_equal(load_rgb(d / "png_named.jpg", 16), plain)  # recognised by its bytes, not its name
    assert np.array_equal(load_rgb(d / "rgb16.png", 16), plain)  # 16-bit colour: the top 8 bits
    assert np.array_equal(load_rgb(d / "rgba16.png", 16), plain)
    grey = load_rgb(d / "grey16.png", 16)
    assert np.abs(grey.astype(int) - load_rgb(d / "la.png", 16).astype(int)).max() <= 1  # not clipped to white
    assert grey.mean() < 200 and np.array_equal(grey[..., 0], grey[..., 2])
    la = load_rgb(d / "la.png", 16)
    assert la.shape == (16, 16, 3) and 60 < la.mean() < 200  # LA is opaque here: the grey shows
    palette = open_image(d / "palette_transparent.png")
    index_0 = np.asarray(Image.open(d / "palette_transparent.png")) == 0
    assert (np.asarray(palette)[index_0] == 255).all()  # the transparent colour is composited over white
    assert open_image(d / "exif_rotated.jpg").size == (40, 30)  # 30 wide x 40 high, turned upright
    for name in ("zero_bytes.jpg", "text.jpg"):
        with pytest.raises(DECODE_ERRORS):
            load_rgb(d / name, 16)


def test_the_split_stage_lists_unreadable_files_by_name_and_keeps_the_rest(tmp_path):
    raw = tmp_path / "raw"
    write_odd_files(raw / "train" / "odd")
    write_odd_files(raw / "test" / "odd")
    result = build_index(raw, DataParams(source="x", on_bad_file="skip", dedupe="report"))
    reasons = dict(zip(result.excluded.path, result.excluded.reason, strict=True))
    for split in ("train", "test"):
        assert reasons[f"{split}/odd/zero_bytes.jpg"] == "unreadable"
        assert reasons[f"{split}/odd/text.jpg"] == "unreadable"
    indexed = {p for s in ("train", "val", "test") for p in result.tables[s].path}
    assert {
        "train/odd/grey16.png",
        "train/odd/exif_rotated.jpg",
        "test/odd/cmyk.jpg",
        "test/odd/png_named.jpg",
    } <= indexed


def test_an_image_over_the_pixel_limit_is_refused_by_its_header_not_decoded(tmp_path):
    bomb = bomb_jpeg(tmp_path / "bomb.jpg")  # 8,000 x 8,000 claimed by a few hundred bytes
    assert bomb.stat().st_size < 2000
    with pytest.raises(ImageTooLarge, match=r"8000x8000 is 64.0 megapixels, over the limit of 50 "):
        load_rgb(bomb, 16)
    with pytest.raises(ImageTooLarge, match="over the limit of 10"):  # the caller's limit
        load_rgb(bomb_jpeg(tmp_path / "small_bomb.jpg", 4000), 16, max_megapixels=10)
    assert DataParams(source="x").max_image_megapixels == MAX_MEGAPIXELS  # predict's default is the split's
    # Past Pillow's own ceiling (~179 MP) the refusal is the same kind, whatever limit the caller set
    with pytest.raises(ImageTooLarge, match="decompression bomb"):
        load_rgb(bomb_jpeg(tmp_path / "huge.jpg", 20000), 16, max_megapixels=1000)


def test_the_split_stage_names_an_image_over_the_pixel_limit(tmp_path):
    raw = tmp_path / "raw"
    for cls in ("a", "b"):
        for i in range(3):
            write_image(raw / "train" / cls / f"{i}.png", seed=i + 10 * (cls == "b"), size=16)
    bomb_jpeg(raw / "train" / "a" / "bomb.jpg")
    with pytest.raises(
        UserError,
        match=r"train/a/bomb.jpg is too large to decode: ImageTooLarge: 8000x8000 is 64.0 "
        r"megapixels.*raise data.max_image_megapixels if it is a genuine photo",
    ):
        build_index(raw, DataParams(source="x"))
    result = build_index(raw, DataParams(source="x", on_bad_file="skip"))
    assert list(result.excluded.path) == ["train/a/bomb.jpg"] and list(result.excluded.reason) == ["too_large"]
    assert result.metrics["excluded"]["too_large"] == 1
