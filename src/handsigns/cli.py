"""The ``handsigns`` command. Sub-commands import what they need, so ``predict`` never imports torch."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from handsigns import __version__
from handsigns.errors import run_main
from handsigns.paths import ONNX


def _predict(args: argparse.Namespace) -> int:
    from handsigns.predict import run

    return run(args.paths, Path(args.model), args.top_k, args.json)


def _serve(args: argparse.Namespace) -> int:
    from handsigns.serve import run

    return run(Path(args.model), args.host, args.port)


def _compare(args: argparse.Namespace) -> int:
    from handsigns.compare import report

    text = report(args.base, Path(args.out), plots=not args.no_plots)
    print(text, end="")
    print(f"(written to {args.out})", file=sys.stderr)
    return 0


def _gate(args: argparse.Namespace) -> int:
    from handsigns.gate import QUALITY_FILES, committed_at, max_drop_at, run_gate
    from handsigns.vcs import reproduce, require_rev, run_dvc

    require_rev(args.base)
    max_drop = args.max_drop if args.max_drop is not None else max_drop_at(args.base)
    base = committed_at(args.base)  # read before a long reproduction: a missing baseline is one clear error
    committed = committed_at("HEAD") if args.exact else None
    if args.reproduce:
        reproduce()
    problems, notes = run_gate(base, committed, max_drop)
    table = run_dvc(["metrics", "diff", args.base, "--md", "--targets", *QUALITY_FILES])
    print(table if len(table.splitlines()) > 2 else f"dvc metrics diff {args.base}: no quality metric changed")
    for note in notes:
        print(f"gate: note: {note}")
    for problem in problems:
        print(f"gate: FAIL: {problem}", file=sys.stderr)
    if not problems:
        exact = (
            (
                ", HEAD's committed run reproduced exactly"
                if not notes
                else f", HEAD's committed val/test accuracy reproduced within {max_drop:g}"
            )
            if args.exact
            else ""
        )
        print(f"gate: pass (val/test accuracy within {max_drop:g} of {args.base}{exact})")
    return 1 if problems else 0


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text} is not a fraction in [0, 1]")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="handsigns", description="SIGNS hand-sign classifier pipeline tools")
    p.add_argument("--version", action="version", version=f"handsigns {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    pr = sub.add_parser(
        "predict",
        help="label images with the exported ONNX model (no torch needed)",
        description="Label image files or folders with the exported ONNX model. One line per "
        "image: path, label, probability (tab-separated); errors go to stderr and "
        "make the exit status non-zero, the other images are still labelled.",
    )
    pr.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (searched recursively)")
    pr.add_argument(
        "--model",
        default=ONNX.as_posix(),
        help="ONNX model; its model card (.json) must lie beside it (default: %(default)s)",
    )
    pr.add_argument("--top-k", type=int, default=1, metavar="K", help="print the K most likely labels")
    pr.add_argument("--json", action="store_true", help="one JSON object per line: path, label, probability")
    pr.set_defaults(func=_predict)
    sv = sub.add_parser(
        "serve",
        help="a local demo page: drop a photo or use the webcam, see the model's answer",
        description="Serve a demo page for the exported ONNX model: drop or choose a photo, or take one with the "
        "webcam; the page shows the image as the model sees it, the top-3 labels and the model card's facts. "
        "Labels with the same model and decoding as `handsigns predict`.",
    )
    sv.add_argument("--model", default=ONNX.as_posix(), help="ONNX model, its card beside it (default: %(default)s)")
    sv.add_argument(
        "--port", type=int, default=8000, help="port to listen on; 0 picks a free one (default: %(default)s)"
    )
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s, this machine "
                    "only; another exposes the page to the network, with a warning)")  # fmt: skip
    sv.set_defaults(func=_serve)
    cp = sub.add_parser(
        "compare",
        help="markdown report: params, metrics and plots of a base rev vs the workspace",
        description="Write one markdown report comparing a base git revision with the workspace: "
        "params diff, quality and runtime metrics diff, and the plots diff (HTML "
        "beside the report). Usable as a pull-request comment.",
    )
    cp.add_argument("--base", default="main", help="git revision to compare against (default: %(default)s)")
    cp.add_argument("--out", default="reports/compare.md", help="markdown file to write (default: %(default)s)")
    cp.add_argument("--no-plots", action="store_true", help="skip `dvc plots diff`")
    cp.set_defaults(func=_compare)
    gp = sub.add_parser(
        "gate",
        help="fail when accuracy dropped against a base rev's committed metrics",
        description="Metric regression gate: (with --reproduce, run `dvc repro` first), print "
        "`dvc metrics diff BASE`, then exit 1 when val or test accuracy dropped by "
        "more than ci.max_accuracy_drop (BASE's params.yaml) against BASE, or, with "
        "--exact, when any quality metric or any output hash in dvc.lock (runtime "
        "figures aside) differs from what HEAD commits.",
    )
    gp.add_argument("--base", default="main", help="git revision with the baseline metrics (default: %(default)s)")
    gp.add_argument(
        "--max-drop",
        type=_fraction,
        default=None,
        help="override ci.max_accuracy_drop (default: its value in BASE's params.yaml)",
    )
    gp.add_argument(
        "--exact",
        action="store_true",
        help="also require HEAD's committed quality metrics and dvc.lock output hashes exactly",
    )
    gp.add_argument(
        "--reproduce",
        action="store_true",
        help="run every stage first (`dvc repro --force`, what CI does on a clean clone)",
    )
    gp.set_defaults(func=_gate)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if getattr(args, "top_k", 1) < 1:
        parser().error("--top-k must be at least 1")
    run_main(lambda: args.func(args))


if __name__ == "__main__":
    main()
