"""`handsigns serve`: a real HTTP server on 127.0.0.1 with a real exported ONNX model (a small one trained here on
SIGNS photos from the shipped zip), and the page in a real headless Chromium."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from browser import CHROMIUM, MISSING, open_page
from test_odd_images import write_odd_files

from handsigns import Predictor, checkpoint
from handsigns.dataset import Split
from handsigns.export import export_verified
from handsigns.imaging import load_rgb
from handsigns.params import build
from handsigns.params.recipe import RecipeParams
from handsigns.serve import MAX_UPLOAD, make_server
from handsigns.train import fit

from conftest import REPO, REQUIRED_IN_CI, TINY, bomb_jpeg

CLASSES = list("012345")


@pytest.fixture(scope="module")
def signs(tmp_path_factory) -> dict[str, list[Path]]:
    """A few SIGNS photos per split from the shipped zip."""
    root = tmp_path_factory.mktemp("signs")
    with zipfile.ZipFile(REPO / "datasets/64x64_SIGNS.zip") as zf:
        names = sorted(n for n in zf.namelist() if n.endswith(".jpg"))
        picked = {
            s: [n for n in names if f"/{s}_signs/" in n][:: 20 if s == "train" else 10] for s in ("train", "test")
        }
        for name in picked["train"] + picked["test"]:
            zf.extract(name, root)
    return {s: [root / n for n in ns] for s, ns in picked.items()}


@pytest.fixture(scope="module")
def model(signs, tmp_path_factory) -> Path:
    """A small model trained in process on those photos and exported (ONNX + card), as the export stage does."""
    out = tmp_path_factory.mktemp("model")
    recipe = build(RecipeParams, {**TINY, "epochs": 2, "model": {"image_size": 32, "num_channels": 4}})

    def split(paths: list[Path]) -> Split:
        pixels = torch.from_numpy(np.stack([load_rgb(p, 32) for p in paths])).permute(0, 3, 1, 2).contiguous()
        labels = torch.tensor([CLASSES.index(p.name[0]) for p in paths])
        return Split("x", pixels, labels, [p.name for p in paths], [p.name for p in paths])

    train, test = split(signs["train"]), split(signs["test"])
    fit(recipe, CLASSES, train, test, best_path=out / "best.pt")
    module, ckpt = checkpoint.load_model(out / "best.pt")
    accuracy = float((checkpoint.log_probs(module, test.images, 64).argmax(1) == test.labels).float().mean())
    summary = {s: {"accuracy": accuracy, "loss": 0.0, "macro_f1": 0.0} for s in ("val", "test")}
    export_verified(module, ckpt, 32, test.images, summary, {}, out)
    return out / "model.onnx"


@pytest.fixture(scope="module")
def server(model):
    srv = make_server(model, "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def request(server, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def upload(server, data: bytes) -> tuple[int, dict]:
    status, body = request(server, "POST", "/predict", data, {"Content-Type": "application/octet-stream"})
    return status, json.loads(body)


def test_every_image_type_is_labelled_as_handsigns_predict_labels_it(server, model, signs, tmp_path):
    predictor = Predictor(model)
    files = [*signs["test"][:3], *sorted(write_odd_files(tmp_path / "odd").iterdir())]
    readable = [f for f in files if f.name not in ("zero_bytes.jpg", "text.jpg")]
    for path in readable:
        status, answer = upload(server, path.read_bytes())
        expected = predictor.predict(path)
        assert status == 200, (path.name, answer)
        assert answer["label"] == expected.label and answer["probabilities"] == pytest.approx(expected.probabilities)
        assert [t["label"] for t in answer["top"]] == sorted(
            expected.probabilities, key=lambda c: -expected.probabilities[c]
        )[:3]
        assert answer["model_input"].startswith("data:image/png;base64,")
    # And the command itself, on a SIGNS photo: the same probabilities (its JSON rounds to 6 decimals)
    cli = subprocess.run([sys.executable, "-m", "handsigns.cli", "predict", "--json", "--top-k", "6", "--model",
                          str(model), str(signs["test"][0])], capture_output=True, text=True, check=True)  # fmt: skip
    _, answer = upload(server, signs["test"][0].read_bytes())
    for item in json.loads(cli.stdout)["top_k"]:
        assert answer["probabilities"][item["label"]] == pytest.approx(item["probability"], abs=1e-6)


def test_bad_uploads_get_a_4xx_with_one_message_and_the_server_keeps_serving(server, tmp_path):
    status, answer = upload(server, b"this is a text file named photo.jpg")
    assert status == 415 and answer == {"error": "not an image this model can read (JPEG, PNG, BMP, WebP, ...)"}
    status, answer = upload(server, b"")
    assert status == 400 and "empty" in answer["error"]
    status, answer = upload(server, bomb_jpeg(tmp_path / "bomb.jpg").read_bytes())
    assert status == 413 and "too large to decode: 8000x8000 is 64.0 megapixels" in answer["error"]
    # Oversized: refused from its Content-Length alone, before the body is read
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=30)
    conn.putrequest("POST", "/predict")
    conn.putheader("Content-Length", str(MAX_UPLOAD + 1))
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 413 and "the limit is 21 MB" in json.loads(response.read())["error"]
    conn.close()
    assert request(server, "POST", "/predict")[0] in (400, 411)  # no body at all
    assert request(server, "GET", "/nowhere")[0] == 404
    status, card = request(server, "GET", "/card")
    assert status == 200 and json.loads(card)["classes"] == CLASSES  # still serving


def test_concurrent_uploads_are_all_answered_correctly(server, model, signs):
    predictor = Predictor(model)
    photos = signs["test"][:8]
    expected = {p: predictor.predict(p).label for p in photos}
    jobs = [photos[i % len(photos)] for i in range(48)]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda p: upload(server, p.read_bytes()), jobs))
    assert [(s, a["label"]) for s, a in answers] == [(200, expected[p]) for p in jobs]


def test_serve_binds_localhost_and_warns_when_told_to_expose_the_page(model):
    cmd = [sys.executable, "-m", "handsigns.cli", "serve", "--model", str(model), "--port", "0", "--host", "0.0.0.0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        warning = proc.stderr.readline()
        started = proc.stdout.readline()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert warning.startswith("serve: warning: listening on 0.0.0.0: anyone who reaches this machine")
    assert started.startswith(f"serve: {model} on http://0.0.0.0:")
    out = subprocess.run([sys.executable, "-m", "handsigns.cli", "serve", "--help"], capture_output=True, text=True)
    assert "default: 127.0.0.1" in out.stdout


@pytest.mark.skipif(CHROMIUM is None and not REQUIRED_IN_CI, reason=MISSING)
def test_the_page_in_a_real_browser_labels_a_signs_photo_and_shows_a_bad_upload(server, model, signs, tmp_path):
    photo = signs["test"][0]
    expected = Predictor(model).predict(photo)
    with open_page(f"http://127.0.0.1:{server.server_address[1]}/") as page:
        page.wait_for_selector("#facts dd")
        assert "0, 1, 2, 3, 4, 5" in page.inner_text("#facts")
        page.set_input_files("#file", str(photo))
        page.wait_for_selector("#result:not([hidden])")
        shown = (page.inner_text("#label"), page.inner_text("#probability"))
        assert shown == (expected.label, f"{100 * expected.probability:.1f}%")
        assert len(page.query_selector_all("#top li")) == 3
        print(f"\npage: {photo.name} -> {shown[0]} {shown[1]}")
        (tmp_path / "notes.jpg").write_text("not a photo")
        page.set_input_files("#file", str(tmp_path / "notes.jpg"))
        page.wait_for_selector("#error:not([hidden])")
        assert page.inner_text("#error") == "not an image this model can read (JPEG, PNG, BMP, WebP, ...)"
