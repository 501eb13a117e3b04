"""The static site (`make site`): the demo page running the exported model in a real headless Chromium tab,
served by a plain static server on 127.0.0.1 with no Python inference behind it, against `handsigns predict` on
the 120 SIGNS test photos; a bad file, a picture that is not a hand, and the webcam (Chromium's fake camera
playing a SIGNS photo)."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, REQUIRED_IN_CI, SIGNS_ZIP, outlier_folder, run, train_and_export
from helpers.browser import CHROMIUM, MISSING, open_page
from helpers.servers import http_server

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None and not REQUIRED_IN_CI, reason=MISSING),
]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A model at SIGNS's own 64 px (so the page resizes nothing and parity is the runtimes'), trained in process
    for a few epochs on every 20th train photo; val and test: the 120 test photos."""
    root = tmp_path_factory.mktemp("site-model")
    with zipfile.ZipFile(SIGNS_ZIP) as zf:
        names = sorted(n for n in zf.namelist() if n.endswith(".jpg"))
        picked = {
            "train": [n for n in names if "/train_signs/" in n][::20],
            "test": [n for n in names if "/test_signs/" in n],
        }
        for name in picked["train"] + picked["test"]:
            zf.extract(name, root / "data/raw")
    recipe = {"epochs": 8, "model": {"image_size": 64, "num_channels": 8, "dropout": 0.3}}
    return train_and_export(root, list("012345"), picked, recipe).root / "models/model.onnx"


@pytest.fixture(scope="module")
def site(model, tmp_path_factory) -> Path:
    """`make site` as users run it (npm ci, then tools/site.py), for ``model``."""
    out = tmp_path_factory.mktemp("site") / "site"
    make = ["make", "-C", str(REPO), "-o", ".venv/.installed", "site", f"SITE_ARGS=--model {model} --out {out}"]
    proc = subprocess.run(make, capture_output=True, text=True, check=True)
    assert f"site: {out} (9 files" in proc.stdout, proc.stdout
    return out


def test_the_site_is_the_page_the_runtime_and_the_model_and_nothing_else(site, model):
    assert sorted(p.name for p in site.iterdir()) == [
        "app.js", "backend.js", "index.html", "model.json", "model.onnx",
        "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm", "ort.wasm.min.mjs", "style.css",
    ]  # fmt: skip
    assert (site / "model.onnx").read_bytes() == model.read_bytes()
    pinned = json.loads((REPO / "package.json").read_text())["dependencies"]["onnxruntime-web"]
    lock = json.loads((REPO / "package-lock.json").read_text())["packages"]["node_modules/onnxruntime-web"]
    assert lock["version"] == pinned and lock["integrity"].startswith("sha512-")  # exact, hash-checked by npm ci


def test_the_tab_labels_the_120_test_photos_as_handsigns_predict_does(site, model, tmp_path):
    photos = sorted((model.parents[1] / "data/raw").rglob("test_signs/*.jpg"))
    assert len(photos) == 120
    proc = run(
        [sys.executable, "-m", "handsigns.cli", "predict", "--json", "--model", str(model), *map(str, photos)], tmp_path
    )
    expected = [json.loads(line) for line in proc.stdout.splitlines()]
    shown = []
    with http_server(site) as base, open_page(f"{base}/") as page:
        page.wait_for_selector("#facts dd")
        assert "(in this tab)" in page.inner_text("#facts")
        for n, photo in enumerate(photos, 1):
            page.set_input_files("#file", str(photo))
            page.wait_for_selector(f'body[data-answered="{n}"]', timeout=60_000)
            assert page.is_hidden("#error"), page.inner_text("#error")
            top = page.query_selector("#top li")
            shown.append(
                (top.query_selector(".name").inner_text(), float(top.query_selector(".value").inner_text()[:-1]) / 100)
            )
    same = sum(label == e["label"] for (label, _), e in zip(shown, expected, strict=True))
    worst = max(abs(p - e["probability"]) for (_, p), e in zip(shown, expected, strict=True))
    print(f"\nsite: top-1 as predict's on {same} of 120 photos, top probability within {worst:.4f}")
    assert same >= 119 and worst <= 0.02  # the page shows percentages to 0.1: 0.0005 of rounding


def test_a_bad_file_and_a_picture_unlike_the_training_images_get_their_messages(site, model, tmp_path):
    from handsigns import Predictor

    predictor = Predictor(model)
    pictures = sorted(outlier_folder(tmp_path / "not-hands", 64, 2).iterdir())
    unlike = max(pictures, key=lambda p: predictor.predict(p).ood_score)
    assert predictor.predict(unlike).unsure
    (tmp_path / "notes.jpg").write_text("not a photo")
    with http_server(site) as base, open_page(f"{base}/") as page:
        page.set_input_files("#file", str(unlike))
        page.wait_for_selector("#unsure:not([hidden])", timeout=60_000)
        assert page.is_hidden("#answer") and "does not look like the pictures I learned" in page.inner_text("#unsure")
        page.set_input_files("#file", str(tmp_path / "notes.jpg"))
        page.wait_for_selector("#error:not([hidden])")
        assert page.inner_text("#error") == "not an image this model can read (JPEG, PNG, BMP, WebP, ...)"


def y4m(photo: Path, out: Path) -> Path:
    """``photo`` as a one-frame YUV4MPEG2 video (4:2:0, full-range BT.601), what Chromium's fake camera plays."""
    rgb = np.asarray(Image.open(photo).convert("RGB"), dtype=np.float64)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    u = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
    v = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b

    def half(c):
        return c.reshape(c.shape[0] // 2, 2, c.shape[1] // 2, 2).mean((1, 3))

    planes = [np.clip(np.round(p), 0, 255).astype(np.uint8).tobytes() for p in (y, half(u), half(v))]
    h, w = y.shape
    out.write_bytes(f"YUV4MPEG2 W{w} H{h} F25:1 Ip A1:1 C420jpeg\nFRAME\n".encode() + b"".join(planes))
    return out


def test_the_webcam_path_labels_what_the_camera_shows(site, model, tmp_path):
    photo = sorted((model.parents[1] / "data/raw").rglob("test_signs/*.jpg"))[0]
    video = y4m(photo, tmp_path / "camera.y4m")
    camera = (
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={video}",
    )
    with http_server(site) as base, open_page(f"{base}/", camera) as page:
        page.click("#start-camera")
        page.wait_for_selector("#capture:not([hidden])")
        page.wait_for_function("document.getElementById('video').videoWidth > 0")
        page.click("#capture")
        page.wait_for_selector('body[data-answered="1"]', timeout=60_000)
        assert page.is_hidden("#error"), page.inner_text("#error")
        assert page.inner_text("#label") in list("012345")
        size = page.eval_on_selector("#seen", "img => [img.naturalWidth, img.naturalHeight]")
        assert size == [64, 64]
