"""Odd image files: each is converted the one way training and predict share (`imaging.load_rgb`), or reported
by name. Generated here; compared with the plain 8-bit RGB picture they were made from."""

import numpy as np
import pytest
from PIL import Image

from handsigns.errors import UserError
from handsigns.imaging import DECODE_ERRORS, MAX_MEGAPIXELS, ImageTooLarge, load_rgb, open_image
from handsigns.params.data import DataParams
from handsigns.split import build_index

from conftest import bomb_jpeg, write_image
from helpers.odd_images import write_odd_files


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
