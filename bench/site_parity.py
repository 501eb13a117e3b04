"""How the static site's resizing (the browser's canvas) compares with Pillow's (handsigns predict), on photos the
model must shrink: the SIGNS test photos enlarged to SIZE px (bicubic, JPEG 90), through the built site in headless
Chromium and through `handsigns predict`, side by side.

    make site && python bench/site_parity.py [--size 1024] [--model models/model.onnx] [--site site]

Prints how many top-1 labels agree, the largest difference of the top probability, the page's seconds a photo,
and the time from the start of a page load to its first label.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT
from PIL import Image

sys.path.insert(0, str(ROOT))
from tests.helpers.browser import open_page
from tests.helpers.servers import http_server


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--model", type=Path, default=ROOT / "models/model.onnx")
    ap.add_argument("--site", type=Path, default=ROOT / "site")
    args = ap.parse_args()
    photos = sorted((ROOT / "data/raw").rglob("test_signs/*.jpg"))
    with tempfile.TemporaryDirectory() as tmp:
        big = []
        for photo in photos:
            out = io.BytesIO()
            Image.open(photo).convert("RGB").resize((args.size, args.size), Image.Resampling.BICUBIC).save(
                out, "JPEG", quality=90
            )
            big.append(Path(tmp) / photo.name)
            big[-1].write_bytes(out.getvalue())
        cmd = [sys.executable, "-m", "handsigns.cli", "predict", "--json", "--model", str(args.model)]
        lines = subprocess.run([*cmd, *map(str, big)], capture_output=True, text=True, check=True).stdout
        expected = [json.loads(line) for line in lines.splitlines()]
        shown = []
        with http_server(args.site) as base, open_page(f"{base}/") as page:
            page.wait_for_selector("#facts dd")  # a fresh profile's first load: its clock started with it
            page.set_input_files("#file", str(big[0]))
            page.wait_for_selector('body[data-answered="1"]', timeout=60_000)
            first = page.evaluate("performance.now()") / 1000
            page.goto(f"{base}/")
            page.wait_for_selector("#facts dd")
            start = time.perf_counter()
            for n, photo in enumerate(big, 1):
                page.set_input_files("#file", str(photo))
                page.wait_for_selector(f'body[data-answered="{n}"]', timeout=60_000)
                top = page.query_selector("#top li")
                shown.append(
                    (
                        top.query_selector(".name").inner_text(),
                        float(top.query_selector(".value").inner_text()[:-1]) / 100,
                    )
                )
            seconds = (time.perf_counter() - start) / len(big)
    same = sum(s[0] == e["label"] for s, e in zip(shown, expected, strict=True))
    worst = max(abs(s[1] - e["probability"]) for s, e in zip(shown, expected, strict=True))
    print(
        f"{len(big)} SIGNS test photos at {args.size} px: top-1 equal on {same}, top probability within {worst:.4f}; "
        f"{seconds:.2f} s a photo in the page (decode, label, occlusion map); the first label {first:.2f} s after the "
        "page began to load (the runtime and the model fetched and compiled first)"
    )


if __name__ == "__main__":
    main()
