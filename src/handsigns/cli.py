"""The ``handsigns`` command. Sub-commands import what they need, so ``predict`` never imports torch."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from handsigns import __version__
from handsigns.errors import run_main
from handsigns.paths import ONNX

if TYPE_CHECKING:
    from handsigns.gate import Mode


def _predict(args: argparse.Namespace) -> int:
    from handsigns.predict import run

    return run(args.paths, Path(args.model), args.top_k, args.json, explain=args.explain and Path(args.explain))


def _audit(args: argparse.Namespace) -> int:
    from handsigns.audit import run

    return run(args.folds, args.top, Path(args.out))


def _serve(args: argparse.Namespace) -> int:
    from handsigns.serve import run

    return run(Path(args.model), args.host, args.port)


def _compare(args: argparse.Namespace) -> int:
    from handsigns.compare import report

    text = report(args.base, Path(args.out), plots=not args.no_plots, artifact_url=args.artifact_url)
    print(text, end="")
    print(f"(written to {args.out})", file=sys.stderr)
    return 0


def _gate(args: argparse.Namespace) -> int:
    from handsigns.gate import run

    return run(args.base, args.max_drop, gate_mode(args))


def gate_mode(args: argparse.Namespace) -> Mode:
    """The gate's :class:`handsigns.gate.Mode` its flags name (``main`` refuses --verify with --exact)."""
    from handsigns.gate import Mode

    if args.verify:
        return Mode.VERIFY
    if args.reproduce:
        return Mode.REPRODUCE_EXACT if args.exact else Mode.REPRODUCE
    return Mode.EXACT if args.exact else Mode.WORKSPACE


def _remote(args: argparse.Namespace) -> int:
    from handsigns.vcs import name_remote

    name_remote(args.url, args.name)
    print(
        f"remote: {args.name} -> {args.url} is the default DVC remote (.dvc/config, verify on). Next: credentials, if "
        f"any, with `dvc remote modify --local {args.name} ...`; `git add .dvc/config && git commit`; `dvc push` "
        "where the run was made, `handsigns pull` elsewhere (docs/sharing-runs.md)"
    )
    return 0


def _pull(args: argparse.Namespace) -> int:
    from handsigns.vcs import pull

    pull(args.remote)
    print("pull: the committed run's outputs are in the workspace, each checked against dvc.lock")
    return 0


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text} is not a fraction in [0, 1]")
    return value


def _add_predict(sub) -> None:
    pr = sub.add_parser(
        "predict",
        help="label images with the exported ONNX model (no torch needed)",
        description="Label image files or folders with the exported ONNX model. One line per "
        "image: path, label, probability (tab-separated), then the out-of-distribution verdict and score: "
        "`unsure` (above 1) when the picture is unlike the training images, its label a guess, else `sure`; "
        "errors go to stderr and make the exit status non-zero, the other images are still labelled.",
    )
    pr.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (searched recursively)")
    pr.add_argument(
        "--model",
        default=ONNX.as_posix(),
        help="ONNX model; its model card (.json) must lie beside it (default: %(default)s)",
    )
    pr.add_argument("--top-k", type=int, default=1, metavar="K", help="print the K most likely labels")
    pr.add_argument(
        "--json", action="store_true", help="one JSON object per line: path, label, probability, ood_score, unsure"
    )
    pr.add_argument(
        "--explain",
        metavar="DIR",
        help="also write, per image, DIR/<its path>.png: the image beside its occlusion map (where the model looks)",
    )
    pr.set_defaults(func=_predict)


def _add_serve(sub) -> None:
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
    host = "address to listen on (default: %(default)s, this machine only; another exposes the page to the network, "
    sv.add_argument("--host", default="127.0.0.1", help=host + "with a warning)")
    sv.set_defaults(func=_serve)


def _add_audit(sub) -> None:
    au = sub.add_parser(
        "audit",
        help="rank the images whose given label the model most doubts (confident learning; trains --folds models)",
        description="Score every train and val image with a model trained without it (stratified folds, the "
        "params.yaml recipe) and every test image with models/best.pt, then rank them by how much the model "
        "doubts the given label (cleanlab). Writes a CSV of every image, most doubtful first, and a gallery of "
        "the first --top. Run it in the project after `dvc repro`; it is not a stage.",
    )
    au.add_argument("--folds", type=int, default=5, help="cross-validation folds (default: %(default)s)")
    au.add_argument("--top", type=int, default=30, help="images in the gallery (default: %(default)s)")
    au.add_argument("--out", default="reports/audit", help="folder to write to (default: %(default)s)")
    au.set_defaults(func=_audit)


def _add_compare(sub) -> None:
    cp = sub.add_parser(
        "compare",
        help="markdown report (a PR comment): params, metrics, curves and predictions of a base rev vs the workspace",
        description="Write one markdown report comparing a base git revision with the workspace, made to be "
        "a pull-request comment on github.com (no relative links or images): test/val accuracy, "
        "the params and quality-metrics diffs (or 'no change'), timings and the machine "
        "fingerprint's deciding keys where they differ, val accuracy and loss per epoch as Mermaid "
        "charts, the test confusion matrix and the test images whose prediction changed. "
        "`dvc plots diff`'s HTML is written beside the report and named in it.",
    )
    cp.add_argument("--base", default="main", help="git revision to compare against (default: %(default)s)")
    cp.add_argument("--out", default="reports/compare.md", help="markdown file to write (default: %(default)s)")
    cp.add_argument("--no-plots", action="store_true", help="skip `dvc plots diff`")
    cp.add_argument(
        "--artifact-url",
        metavar="URL",
        help="absolute http(s) URL of the uploaded reports (e.g. the CI run's artifact), linked from the report",
    )
    cp.set_defaults(func=_compare)


def _add_gate(sub) -> None:
    gp = sub.add_parser(
        "gate",
        help="fail when held-out accuracy dropped against a base rev's committed run",
        description="Metric regression gate (with --reproduce, every stage runs first): print `dvc metrics diff "
        "BASE`, then exit 1 when held-out (val + test) accuracy dropped against BASE's committed predictions by "
        "more than ci.max_accuracy_drop and a paired sign test puts the chance of noise below ci.significance "
        "(both from BASE's params.yaml); with --exact, also when HEAD's committed run does not reproduce: byte "
        "for byte on its machine class, within the same rule elsewhere. With --verify instead of --reproduce, "
        "HEAD's run is pulled from the DVC remote and checked without training (docs/sharing-runs.md). Rules: "
        "docs/comparing-runs.md.",
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
        help="also require HEAD's committed run to reproduce (its dvc.lock to record its own code and params)",
    )
    how = gp.add_mutually_exclusive_group()
    how.add_argument(
        "--reproduce",
        action="store_true",
        help="run every stage first (`dvc repro --force`, what CI does on a clean clone)",
    )
    how.add_argument(
        "--verify",
        action="store_true",
        help="check HEAD's committed run without training: pull its outputs from the DVC remote, check them "
        "against dvc.lock, re-run evaluate and the export check on the pulled model (docs/sharing-runs.md)",
    )
    gp.set_defaults(func=_gate)


def _add_remote(sub) -> None:
    rm = sub.add_parser(
        "remote",
        help="name the team's DVC remote once (written to .dvc/config, the default for push and pull)",
        description="Name the DVC remote runs travel through: `dvc remote add --default` plus `verify true` (a "
        "damaged object is caught on pull), in .dvc/config, which is committed. URL: a local or NFS path, "
        "ssh://user@host/path, s3://bucket/path (pip install dvc-s3) or an http(s) mirror (read-only). A password "
        "in the URL is refused: credentials go to .dvc/config.local (dvc remote modify --local).",
    )
    rm.add_argument("url", help="where the remote lives")
    rm.add_argument("--name", default="storage", help="the remote's name (default: %(default)s)")
    rm.set_defaults(func=_remote)


def _add_pull(sub) -> None:
    pl = sub.add_parser(
        "pull",
        help="get the committed run's outputs (model, data, export) from the DVC remote instead of training",
        description="`dvc pull` from the DVC remote (the default one, or --remote): every output dvc.lock "
        "records, checked against its hash. A missing or damaged object is named in one line and nothing of "
        "it is written. Sharing runs: docs/sharing-runs.md.",
    )
    pl.add_argument("--remote", help="the DVC remote to pull from (default: the project's default remote)")
    pl.set_defaults(func=_pull)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="handsigns", description="SIGNS hand-sign classifier pipeline tools")
    p.add_argument("--version", action="version", version=f"handsigns {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for add in (_add_predict, _add_serve, _add_audit, _add_compare, _add_gate, _add_remote, _add_pull):
        add(sub)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if getattr(args, "top_k", 1) < 1:
        parser().error("--top-k must be at least 1")
    if getattr(args, "verify", False) and args.exact:
        parser().error("--verify already checks HEAD's committed run; --exact goes with --reproduce")
    run_main(lambda: args.func(args))


if __name__ == "__main__":
    main()
