"""``handsigns serve``: a local demo page. Drop a photo or take one with the webcam, and see what the model says.

The standard library serves it (no framework, nothing from the internet at run time): the page is plain
HTML/JS/CSS in ``handsigns/web/``. Uploads are labelled by the same exported ONNX model and the same decoding
path as ``handsigns predict`` (:class:`handsigns.predict.Predictor`), so a page upload and ``handsigns predict``
on the same file give the same probabilities. Bad uploads get a 4xx with one message, and serving goes on.

- ``GET /``: the page; ``GET /card``: the model card's facts; ``POST /predict``: the image file as the body.
"""

from __future__ import annotations

import base64
import io
import json
import sys
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
from pathlib import Path

import numpy as np
from PIL import Image

from handsigns.errors import UserError
from handsigns.imaging import DECODE_ERRORS, ImageTooLarge
from handsigns.predict import Predictor
from handsigns.saliency import heatmap, occlusion

MAX_UPLOAD = 20 * 1024 * 1024  # bytes: a phone photo is 2-10 MB
TOP = 3
PAGES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/backend.js": ("backend.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}


def facts(predictor: Predictor, model: Path) -> dict:
    """What the page shows of the model card."""
    card = predictor.card
    metrics = card.get("metrics", {})
    return {
        "model": str(model),
        "classes": predictor.classes,
        "image_size": predictor.image_size,
        "test_accuracy": metrics.get("test", {}).get("accuracy"),
        "architecture": card.get("architecture", {}).get("arch", "net"),
        "best_epoch": card.get("best_epoch"),
        "start": card.get("start"),
        # the out-of-distribution check's cost and catch (handsigns.ood); None: the model has none
        "ood": {k: card["ood"].get(k) for k in ("test_flagged", "caught")} if predictor.ood_output else None,
    }


def label(predictor: Predictor, data: bytes) -> dict:
    """The answer to one upload: top labels with probabilities, every probability, whether the picture is unlike
    the training images (``unsure``), the image as the model sees it and where it looked (PNGs, base64). Decoded
    and labelled as `handsigns predict` does (``Predictor.pixels``, ``Predictor.predictions``); raises a decode
    error for what is not an image."""
    pixels = predictor.pixels(data)
    (prediction,) = predictor.predictions(pixels[None])
    heat, _ = occlusion(predictor, pixels)  # not Predictor.explain: the pixels are decoded already
    return {
        "label": prediction.label,
        "probability": prediction.probability,
        "top": [{"label": c, "probability": p} for c, p in prediction.top(TOP)],
        "probabilities": prediction.probabilities,
        "ood_score": prediction.ood_score,  # None: the model has no out-of-distribution check
        "unsure": prediction.unsure,
        "model_input": png_url(pixels),
        "looks": png_url(heatmap(pixels, heat)),  # where the model looked: its occlusion map over the input
    }


def png_url(pixels: np.ndarray) -> str:
    """An S x S x 3 uint8 image as a PNG data URL."""
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


class Handler(BaseHTTPRequestHandler):
    """The page, the model card and ``POST /predict`` for one model (:func:`make_handler` binds it)."""

    server_version = "handsigns"
    predictor: Predictor
    card: bytes  # the model card's facts, as JSON
    web = files("handsigns") / "web"

    def log_message(self, fmt: str, *args) -> None:  # one short line per request, on stderr
        sys.stderr.write(f"serve: {self.address_string()} {fmt % args}\n")

    def send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, status: int, obj: dict) -> None:
        self.send(status, json.dumps(obj).encode(), "application/json")

    def refuse(self, status: HTTPStatus, message: str) -> None:
        self.send_json(status, {"error": message})

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/card":
            self.send(HTTPStatus.OK, self.card, "application/json")
        elif path in PAGES:
            name, ctype = PAGES[path]
            self.send(HTTPStatus.OK, (self.web / name).read_bytes(), ctype)
        else:
            self.refuse(HTTPStatus.NOT_FOUND, f"no page {path}")

    def upload(self) -> bytes | None:
        """The request's body, or None once refused: no length, over :data:`MAX_UPLOAD`, or empty."""
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self.refuse(HTTPStatus.LENGTH_REQUIRED, "send the image as the request body, with its length")
            return None
        if length > MAX_UPLOAD:
            self.close_connection = True  # the body is not read: the connection cannot be reused
            size, limit = length / 1e6, MAX_UPLOAD / 1e6
            self.refuse(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the file is {size:.1f} MB; the limit is {limit:.0f} MB")
            return None
        data = self.rfile.read(length)
        if not data:
            self.refuse(HTTPStatus.BAD_REQUEST, "the upload is empty: choose an image file")
            return None
        return data

    def do_POST(self) -> None:
        if self.path.split("?", 1)[0] != "/predict":
            return self.refuse(HTTPStatus.NOT_FOUND, f"no endpoint {self.path}")
        data = self.upload()
        if data is None:
            return None
        try:
            answer = label(self.predictor, data)
        except ImageTooLarge as exc:
            return self.refuse(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the image is too large to decode: {exc}")
        except DECODE_ERRORS:
            unreadable = "not an image this model can read (JPEG, PNG, BMP, WebP, ...)"
            return self.refuse(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, unreadable)
        self.send_json(HTTPStatus.OK, answer)


def make_handler(predictor: Predictor, model: Path) -> type[Handler]:
    """The :class:`Handler` of ``predictor`` (the ONNX model at ``model``)."""
    return type(
        "ModelHandler", (Handler,), {"predictor": predictor, "card": json.dumps(facts(predictor, model)).encode()}
    )


class Server(ThreadingHTTPServer):
    daemon_threads = True  # a request still running never holds up Ctrl-C
    request_queue_size = 128  # the listen backlog (the standard library's 5 resets a burst of uploads)


def make_server(model: Path, host: str = "127.0.0.1", port: int = 8000) -> Server:
    predictor = Predictor(model)
    try:
        return Server((host, port), make_handler(predictor, model))
    except OSError as exc:
        raise UserError(f"cannot serve on {host}:{port} ({exc.strerror}); choose another --port") from None


def run(model: Path, host: str, port: int) -> int:
    server = make_server(model, host, port)
    if host not in ("127.0.0.1", "localhost", "::1"):
        warning = f"listening on {host}: anyone who reaches this machine can use the page; there is no login"
        print(f"serve: warning: {warning}", file=sys.stderr)
    where = f"http://{'localhost' if host in ('127.0.0.1', '::1') else host}:{server.server_address[1]}/"
    print(f"serve: {model} on {where} (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("serve: stopped", flush=True)
    finally:
        server.server_close()
    return 0
