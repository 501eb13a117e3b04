"""Take docs/demo.png: `handsigns serve` with the workspace's model, a SIGNS test photo dropped on the page, in
headless Debian Chromium driven by Playwright (`make screenshot`; needs `make repro` and `apt install chromium`)."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

from handsigns.serve import make_server

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tests' browser launcher: the launch flags this machine needs
from tests.helpers.browser import CHROMIUM, open_page  # noqa: E402


def main() -> None:
    os.chdir(ROOT)  # the page shows the model's path: relative, not this checkout's
    photo = sorted(Path("data/raw/64x64_SIGNS/test_signs").glob("3_*.jpg"))[0]
    server = make_server(Path("models/model.onnx"), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with open_page(f"http://127.0.0.1:{server.server_address[1]}/") as page:
        page.set_input_files("#file", str(photo))
        page.wait_for_selector("#result:not([hidden])")
        page.screenshot(path="docs/demo.png", full_page=True)
        print(f"docs/demo.png: {photo.name} -> {page.inner_text('#answer')} ({CHROMIUM})")
    server.shutdown()


if __name__ == "__main__":
    main()
