"""Odd image files: each is converted the one way training and predict share (`imaging.load_rgb`), or reported
by name. Generated here; compared with the plain 8-bit RGB picture they were made from."""

import numpy as np
import pytest
from PIL import Image

from handsigns.imaging import DECODE_ERRORS, load_rgb, open_image
from handsigns.params.data import DataParams
from handsigns.split import build_index

RGB = np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)  # 40 rows, 30 columns


def write_odd_files(folder):
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(RGB).save(folder / "plain.png")
    Image.fromarray(RGB).convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    grey = np.asarray(Image.fromarray(RGB).convert("L"), dtype=np.uint16)
    Image.fromarray(grey * 257).save(folder / "grey16.png")  # 16-bit: v * 257 keeps the 8-bit value on top
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
