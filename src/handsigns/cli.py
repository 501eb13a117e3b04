"""The ``handsigns`` command. Sub-commands import what they need, so ``predict`` never imports torch."""

from __future__ import annotations

import argparse
from pathlib import Path

from handsigns import __version__
from handsigns.errors import run_main


def _predict(args: argparse.Namespace) -> int:
    from handsigns.predict import run

    return run(args.paths, Path(args.model), args.top_k, args.json)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="handsigns", description="SIGNS hand-sign classifier pipeline tools")
    p.add_argument("--version", action="version", version=f"handsigns {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    pr = sub.add_parser("predict", help="label images with the exported ONNX model (no torch needed)",
                        description="Label image files or folders with the exported ONNX model. One line per "
                                    "image: path, label, probability (tab-separated); errors go to stderr and "
                                    "make the exit status non-zero, the other images are still labelled.")
    pr.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (searched recursively)")
    pr.add_argument("--model", default="models/model.onnx",
                    help="ONNX model; its model card (.json) must lie beside it (default: %(default)s)")
    pr.add_argument("--top-k", type=int, default=1, metavar="K", help="print the K most likely labels")
    pr.add_argument("--json", action="store_true", help="one JSON object per line: path, label, probability")
    pr.set_defaults(func=_predict)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if getattr(args, "top_k", 1) < 1:
        parser().error("--top-k must be at least 1")
    run_main(lambda: args.func(args))


if __name__ == "__main__":
    main()
