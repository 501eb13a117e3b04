"""`make gpu-check`: the CUDA path on a real GPU, in one short run (a few minutes on one GPU).

    python bench/gpu_check.py [--out gpu-check] [--device cuda]

On the data the workspace's split stage indexed (`dvc repro split` first, or data/raw and data/index copied in),
with the code's torch, without DVC (a GPU box may have torch and nothing else: PYTHONPATH=src is enough):

  1. what `precision: auto` picks on this GPU, and the fingerprint (capability, driver, TF32);
  2. the default recipe and the course notes' recipe (100 epochs), each in fp32 and bf16 (`auto` is one of the
     two): train seconds, images/s, seconds until val accuracy first reaches 0.95 and 0.99, best val and test
     accuracy;
  3. the default recipe in `auto` with `train.deterministic: true`, twice: the two checkpoints must be the same
     bytes;
  4. the gate's rule (`ci` in params.yaml) on the default run in auto's precision: its held-out predictions
     against the run committed in metrics/eval/ (another machine: a drop beyond noise fails).

Writes OUT/gpu-check.json (every figure, each run's fingerprint and runtime.json), OUT/gpu-check.md (the
table, also printed) and OUT/runs/NAME/{runtime,fingerprint}.json. Exits non-zero when a check fails.
`--device cpu` runs the same script on the CPU (a dry run of the script itself, with fewer epochs: --quick).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, apply_overrides, write_results
from speed import NOTES_RECIPE

THRESHOLDS = (0.95, 0.99)


class Clock:
    """A DVCLive stand-in for ``fit``: the seconds at which each epoch's val accuracy was logged."""

    def __init__(self) -> None:
        self.step, self.started, self.val = 0, time.perf_counter(), []

    def log_metric(self, name: str, value: float) -> None:
        if name == "val/accuracy":
            self.val.append((time.perf_counter() - self.started, value))

    def next_step(self) -> None:
        pass

    def first_reaching(self, threshold: float) -> float | None:
        return next((round(s, 2) for s, acc in self.val if acc >= threshold), None)


def recipe_for(overrides: list[str]):
    from handsigns.params import build
    from handsigns.params.recipe import RecipeParams

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw = {k: v for k, v in raw.items() if k not in RecipeParams.OTHER_SECTIONS}
    return build(RecipeParams, apply_overrides(raw, overrides))


def held_out(model_path: Path, splits: dict, device) -> dict[str, tuple[str, str]]:
    """path -> (actual, predicted) on val and test, as the evaluate stage's predictions CSVs hold them."""
    from handsigns.checkpoint import load_model, score

    model, meta = load_model(model_path)
    classes = meta["classes"]
    rows = {}
    for split in splits.values():
        predicted = score(model.to(device), split.images, 256, device).argmax(1).tolist()
        for path, label, guess in zip(split.paths, split.labels.tolist(), predicted, strict=True):
            rows[path] = (classes[label], classes[guess])
    return rows


def committed_held_out() -> dict[str, tuple[str, str]]:
    from handsigns.compare import read_predictions

    rows = {}
    for name in ("val", "test"):
        path = ROOT / "metrics/eval" / f"predictions_{name}.csv"
        if path.exists():
            rows.update(read_predictions(path.read_text()))
    return rows


def train_one(name: str, overrides: list[str], splits: dict, classes: list[str], out: Path, keep: Path, device) -> dict:
    """Train one run in process (the best epoch saved to ``keep``); its figures."""
    from handsigns.errors import UserError
    from handsigns.train import fit

    recipe = recipe_for(overrides)
    clock = Clock()
    print(f"gpu-check: {name} ...", flush=True)
    try:
        summary = fit(recipe, classes, splits["train"], splits["val"], live=clock, best_path=keep)
    except UserError as exc:  # bf16 on a GPU that only emulates it: refused, and said so in the table
        return {"overrides": overrides, "refused": str(exc)}
    run_dir = out / "runs" / name
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "runtime.json").write_text(json.dumps(summary["runtime"], indent=2) + "\n")
    (run_dir / "fingerprint.json").write_text(json.dumps(summary["fingerprint"], indent=2, sort_keys=True) + "\n")
    rows = held_out(keep, {"test": splits["test"]}, device)
    test_right = sum(actual == guess for actual, guess in rows.values())
    return {
        "overrides": overrides,
        "precision": summary["fingerprint"]["precision"],
        "epochs": summary["quality"]["epochs_run"],
        "train_seconds": summary["runtime"]["train_seconds"],
        "images_per_s": summary["runtime"]["train_images_per_s"],
        **{f"to_val_{t}_s": clock.first_reaching(t) for t in THRESHOLDS},
        "best_val_accuracy": round(summary["best"]["accuracy"], 4),
        "test_accuracy": round(test_right / len(rows), 4),
        "runtime": summary["runtime"],
        "fingerprint": summary["fingerprint"],
    }


def table(report: dict) -> str:
    fp = report["fingerprint"]
    gpu = (
        f"compute capability {fp['gpu_capability']}, driver {fp['gpu_driver']}, "
        f"CUDA {fp['cuda']}, cuDNN {fp['cudnn']}, "
        if fp["gpu"]
        else f"{fp['cpu_capability']} kernels, {fp['torch_threads']} threads, "
    )
    head = [
        f"`make gpu-check` on {fp['device_name']} ({gpu}torch {fp['torch']}; {report['date']}): "
        f"`precision: auto` picks {report['auto']}",
        "",
        "| run | precision | epochs | train s | images/s | s to val 0.95 | s to val 0.99 | best val | test |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = [
        f"| {name} | refused: {r['refused']} | | | | | | | |"
        if "refused" in r
        else f"| {name} | {r['precision']} | {r['epochs']} | {r['train_seconds']:.1f} | {r['images_per_s']:.0f} | "
        f"{r['to_val_0.95_s'] or '-'} | {r['to_val_0.99_s'] or '-'} | {r['best_val_accuracy']:.4f} | "
        f"{r['test_accuracy']:.4f} |"
        for name, r in report["runs"].items()
    ]
    checks = [f"- {name}: {'pass' if ok else 'FAIL'}: {text}" for name, (ok, text) in report["checks"].items()]
    return "\n".join([*head, *rows, "", *checks]) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "gpu-check")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="2 epochs a run: checks the script, not the GPU")
    args = ap.parse_args()

    import torch

    from handsigns.dataset import load_split, read_classes
    from handsigns.fingerprint import fingerprint
    from handsigns.gate import Rule, pair
    from handsigns.params import load
    from handsigns.params.ci import CIParams
    from handsigns.runtime import resolve_device, resolve_precision

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("gpu-check: no CUDA device here; run it on a GPU machine (or --device cpu for a dry run)")
    if not (ROOT / "data/index/train.csv").exists():
        raise SystemExit("gpu-check: data/index not found; run `dvc repro split` first (or copy data/ in)")
    device = resolve_device(args.device)
    auto = resolve_precision("auto", device)
    classes = read_classes(ROOT / "data/index")
    size = recipe_for([]).model.image_size
    splits = {s: load_split(s, size, classes, ROOT / "data/index", ROOT / "data/raw") for s in ("train", "val", "test")}
    base = [f"train.device={args.device}", *(["epochs=2", "train.min_steps=0"] if args.quick else [])]
    notes = [*NOTES_RECIPE, *([] if args.quick else ["epochs=100"]), *base]
    # auto trains as one of the two: its figures are that run's (the deterministic pair below runs auto itself)
    plan = {f"default-{p}": [*base, f"train.precision={p}"] for p in ("fp32", "bf16")}
    plan |= {f"notes-{p}": [*notes, f"train.precision={p}"] for p in ("fp32", "bf16")}
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {"date": time.strftime("%Y-%m-%d"), "auto": auto, "runs": {}, "checks": {}}
    with tempfile.TemporaryDirectory() as tmp:
        keep = {name: Path(tmp) / f"{i}.pt" for i, name in enumerate(plan)}
        for name, overrides in plan.items():
            report["runs"][name] = train_one(name, overrides, splits, classes, args.out, keep[name], device)
        same = []
        for i in (1, 2):
            path = Path(tmp) / f"deterministic{i}.pt"
            name = f"default-auto-deterministic-{i}"
            overrides = [*base, "train.precision=auto", "train.deterministic=true"]
            report["runs"][name] = train_one(name, overrides, splits, classes, args.out, path, device)
            same.append(path.read_bytes())
        report["checks"]["repeat"] = (
            same[0] == same[1],
            "two deterministic default runs wrote the same checkpoint bytes"
            if same[0] == same[1]
            else "two deterministic default runs wrote different checkpoint bytes",
        )
        committed = committed_held_out()
        ours = held_out(keep[f"default-{auto}"], {s: splits[s] for s in ("val", "test")}, device)
    ci = load(CIParams, ROOT / "params.yaml")
    paired = pair(committed, ours)
    failed = Rule(ci.max_accuracy_drop, ci.significance).regression(paired, "the committed run")
    report["checks"]["gate"] = (not failed, failed[0] if failed else paired.describe("the committed run"))
    report["fingerprint"] = fingerprint(device, auto)
    text = table(report)
    write_results(args.out / "gpu-check", report, text)
    print(text)
    return 0 if all(ok for ok, _ in report["checks"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
