"""`make site`: the demo page as a static site that runs the exported model in the browser tab, with no server
behind it (GitHub Pages, `python -m http.server`, a USB stick): the page, its JavaScript, ONNX Runtime Web's
WebAssembly build (node_modules/, from package-lock.json by `npm ci`), the model and its card, nothing else.

    python tools/site.py [--model models/model.onnx] [--out site]

The page is `handsigns serve`'s (src/handsigns/web/) with the in-tab backend (src/handsigns/web/intab/) in place of
the one that asks the server. The folder is written beside ``--out`` and renamed into place: a failed build leaves
the previous site whole. One line on stderr says what is missing, if anything.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "src/handsigns/web"
PAGE = ("index.html", "app.js", "style.css")
ORT = ROOT / "node_modules/onnxruntime-web/dist"
# ONNX Runtime Web's WebAssembly-only ES module, and the runtime it loads next to itself
RUNTIME = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")


def build(model: Path, out: Path) -> list[str]:
    """Write the site into ``out``; the names of its files."""
    card = model.with_suffix(".json")
    for path, fix in ((model, "run make repro (or dvc repro export)"), (card, "it must lie beside the model")):
        if not path.is_file():
            raise SystemExit(f"make site: {path} not found; {fix}")
    if not json.loads(card.read_text()).get("classes"):
        raise SystemExit(f"make site: {card} is not a handsigns model card; re-run dvc repro export")
    missing = [name for name in RUNTIME if not (ORT / name).is_file()]
    if missing:
        raise SystemExit(f"make site: {ORT / missing[0]} not found; run npm ci (make site runs it)")
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; a site is for reading
    try:
        for name in PAGE:
            shutil.copyfile(WEB / name, staging / name)
        shutil.copyfile(WEB / "intab/backend.js", staging / "backend.js")
        for name in RUNTIME:
            shutil.copyfile(ORT / name, staging / name)
        shutil.copyfile(model, staging / "model.onnx")
        shutil.copyfile(card, staging / "model.json")
        names = sorted(p.name for p in staging.iterdir())
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return names


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=ROOT / "models/model.onnx")
    ap.add_argument("--out", type=Path, default=ROOT / "site")
    args = ap.parse_args()
    names = build(args.model, args.out)
    size = sum((args.out / n).stat().st_size for n in names) / 1e6
    how = f"serve it as it is, e.g. python -m http.server -d {args.out}"
    print(f"site: {args.out} ({len(names)} files, {size:.1f} MB): {how}")


if __name__ == "__main__":
    try:
        main()
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
            sys.exit(1)
        raise
