"""Generality: the default recipe, untouched, on image-folder sets derived here; test accuracy over seeds per set.

params.yaml's recipe was tuned on SIGNS (64 px photos, 6 classes, ~800 train images): does it hold elsewhere?
The sets, derived deterministically (fixed seeds) and written as image folders:

- signs-5, signs-10, signs-25, signs-45: SIGNS with 5/10/25/45 % of each class's train images (nested: one
  seeded permutation per class), val and test whole, byte for byte (45 %: 369 train images after the split drops
  copies of val and test, about 60 a class); signs: the whole zip, the reference row.
- shapes-few: 6 drawn shapes x 40, 64 px, random place/size/rotation/colour on noisy gradients; no split given.
- grey-lowres: every SIGNS image grey at 28 px (the pipeline scales it to 64), SIGNS's split kept.
- glyphs-26: A-Z x 30, 48 px, Pillow's scalable default font at random size/offset/rotation/colours; no split.
- photos-large: signs-25's files at 1024 px (bicubic) with sensor noise, JPEG 90: the decode-and-shrink path.
- digits: scikit-learn's 1,797 8x8 digit scans as 32 px grey: many small look-alikes; no split given.
- letters-small: B D E F P R, 9-12 px tall anywhere on 64 px colour gradients, split as signs-10's (15/35/20 a
  class): a small set whose classes are fine detail.

Each set goes through the pipeline's own stages as `dvc repro` runs them, in a throwaway project: download
(the folder is data.source) and split once per set (they do not read `seed`), then train and evaluate per seed
on links to that split. Per set: split sizes, test accuracy per seed (mean, min), the best val epoch, the
train - val accuracy gap at the last epoch (train's is the running accuracy over the augmented epoch, as dvclive
logs it: near 0 or below is no overfitting), the out-of-distribution check's share of test images flagged (its
threshold lets through at most 5 % of val: a set where test is flagged far more is one whose test is unlike its
val) and share of handsigns.outliers' pictures caught, and train seconds.

    python bench/generality.py                                # all sets, seeds 0 1 2 (hours on 2 cores)
    python bench/generality.py --sets shapes-few,signs-5 --seeds 0 -S epochs=1 -S train.min_steps=5   # smoke
    python bench/generality.py -S train.augment=false --out bench/results/generality-noaug

A run has OMP_NUM_THREADS threads (default 1), -j runs at once (default: cores / threads). Sets are built into
WORK/sets (--work, default /tmp/handsigns-generality) once, and again when this script changes. Writes PREFIX.json
(every per-seed figure, the overrides, the machine) and PREFIX.md (the table, also printed). A failing stage's
error line goes in its row.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
import zipfile
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import mean

import numpy as np
from common import RESULTS, SIGNS_ZIP, StageFailed, figures, project, run_stage, write_results
from PIL import Image, ImageDraw, ImageFont

SHAPES = ("circle", "square", "triangle", "star", "cross", "ring")


def save(img: Image.Image, path: Path, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)


def signs_members() -> list[str]:
    with zipfile.ZipFile(SIGNS_ZIP) as zf:
        return sorted(n for n in zf.namelist() if not n.endswith("/"))


def signs_subset(fraction: float) -> list[str]:
    """The SIGNS members of a few-shot set: val and test whole, round(fraction x n), at least 1, of each class's
    train images. One seeded permutation per class: the 5 % set is inside the 10 % one, inside the 25 % one."""
    keep, train = [], defaultdict(list)
    for name in signs_members():
        if "/train_signs/" in name:
            train[Path(name).name.split("_")[0]].append(name)
        else:
            keep.append(name)
    rng = np.random.default_rng(230)
    for paths in (train[c] for c in sorted(train)):
        keep += [paths[i] for i in rng.permutation(len(paths))[: max(1, round(fraction * len(paths)))]]
    return sorted(keep)


def signs_files(names: list[str]):
    with zipfile.ZipFile(SIGNS_ZIP) as zf:
        yield from ((name, zf.read(name)) for name in names)


def copy_signs(names: list[str], dest: Path) -> None:
    for name, data in signs_files(names):
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        (dest / name).write_bytes(data)


def grey_lowres(dest: Path) -> None:
    for name, data in signs_files(signs_members()):
        split, file = Path(name).parent.name.split("_")[0], Path(name)  # train_signs/3_x.jpg -> train/3/
        img = Image.open(io.BytesIO(data)).convert("L").resize((28, 28), Image.Resampling.BOX)
        save(img, dest / split / file.name[0] / f"{file.stem}.png")


def photos_large(dest: Path) -> None:
    rng = np.random.default_rng(1024)
    for name, data in signs_files(signs_subset(0.25)):
        img = Image.open(io.BytesIO(data)).convert("RGB").resize((1024, 1024), Image.Resampling.BICUBIC)
        save(noisy(np.asarray(img, dtype=np.float32), rng, 4.0), dest / name, quality=90)


def noisy(px: np.ndarray, rng: np.random.Generator, sigma: float) -> Image.Image:
    return Image.fromarray(np.clip(px + rng.normal(0, sigma, px.shape), 0, 255).round().astype(np.uint8))


def paint(mask: np.ndarray, rng: np.random.Generator, sigma: float) -> Image.Image:
    """``mask`` (H x W in [0, 1]) in a random colour over a gradient between two near colours, then noise: the
    colours say nothing of the class, and no pixel is flat. The ink is >= 100 apart (RGB) from both ends."""
    size = mask.shape[0]
    a = rng.uniform(0, 255, 3)
    b = np.clip(a + rng.uniform(-70, 70, 3), 0, 255)
    t = np.linspace(0, 1, size)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * t[None, :] + np.sin(angle) * t[:, None]
    ramp = (ramp - ramp.min()) / np.ptp(ramp)
    ink = rng.uniform(0, 255, 3)
    while min(np.linalg.norm(ink - a), np.linalg.norm(ink - b)) < 100:
        ink = rng.uniform(0, 255, 3)
    return noisy((a + (b - a) * ramp[..., None]) * (1 - mask[..., None]) + ink * mask[..., None], rng, sigma)


def polygon(shape: str) -> list[tuple[float, float]]:
    """The outline of ``shape`` around (0, 0), radius 1."""
    if shape == "cross":  # a plus with arms 0.6 wide: one arm's three corners, turned by 90 degrees 4 times
        w = 0.3
        turns = ((1, 0), (0, 1), (-1, 0), (0, -1))
        return [(x * c + y * s, y * c - x * s) for c, s in turns for x, y in ((w, 1), (w, w), (1, w))]
    corners, inner, start = {"square": (4, 1, np.pi / 4), "triangle": (3, 1, 0), "star": (10, 0.45, 0)}[shape]
    angles = start + 2 * np.pi * np.arange(corners) / corners
    return [((1, inner)[i % 2] * np.cos(a), (1, inner)[i % 2] * np.sin(a)) for i, a in enumerate(angles)]


def shape_mask(shape: str, size: int, rng: np.random.Generator) -> np.ndarray:
    s = 4  # drawn at 4x and box-filtered down: anti-aliased edges
    r = rng.uniform(0.15, 0.36) * size
    cx, cy = rng.uniform(r, size - r, 2)
    theta = rng.uniform(0, 2 * np.pi)
    mask = Image.new("L", (size * s, size * s))
    draw = ImageDraw.Draw(mask)
    box = [s * (cx - r), s * (cy - r), s * (cx + r), s * (cy + r)]
    if shape == "circle":
        draw.ellipse(box, fill=255)
    elif shape == "ring":
        draw.ellipse(box, outline=255, width=round(s * r * 0.35))
    else:
        unit = polygon(shape)
        c, n = np.cos(theta), np.sin(theta)
        draw.polygon([(s * (cx + r * (x * c - y * n)), s * (cy + r * (x * n + y * c))) for x, y in unit], fill=255)
    return np.asarray(mask.resize((size, size), Image.Resampling.BOX), dtype=np.float32) / 255


def shapes_few(dest: Path) -> None:
    rng = np.random.default_rng(6)
    for shape in SHAPES:
        for i in range(40):
            save(paint(shape_mask(shape, 64, rng), rng, 12.0), dest / shape / f"{shape}_{i:03d}.png")


def glyphs(dest: Path) -> None:
    rng = np.random.default_rng(26)
    for letter in map(chr, range(ord("A"), ord("Z") + 1)):
        for i in range(30):
            mask = Image.new("L", (48, 48))
            font = ImageFont.load_default(size=int(rng.integers(20, 38)))  # scalable (FreeType) since Pillow 10.1
            x, y = 24 + rng.uniform(-6, 6, 2)
            ImageDraw.Draw(mask).text((x, y), letter, font=font, fill=255, anchor="mm")
            mask = mask.rotate(rng.uniform(-12, 12), resample=Image.Resampling.BILINEAR)
            save(paint(np.asarray(mask, dtype=np.float32) / 255, rng, 10.0), dest / letter / f"{letter}_{i:03d}.png")


LOOKALIKE_LETTERS = "BDEFPR"  # told apart by a stroke or a bowl a few pixels across


def letters_small(dest: Path) -> None:
    """Fine detail is the class: 6 look-alike letters 9-12 px tall, anywhere on a 64 px canvas, split given as
    signs-10's (15 train, 35 val, 20 test a class): a small set whose classes are a few pixels of stroke."""
    rng = np.random.default_rng(12)
    for letter in LOOKALIKE_LETTERS:
        for i in range(70):
            split = "train" if i < 15 else "val" if i < 50 else "test"
            mask = Image.new("L", (64 * 4, 64 * 4))  # drawn at 4x and box-filtered down: anti-aliased strokes
            font = ImageFont.load_default(size=4 * int(rng.integers(12, 17)))
            x, y = 4 * rng.uniform(10, 54, 2)
            ImageDraw.Draw(mask).text((x, y), letter, font=font, fill=255, anchor="mm")
            mask = mask.rotate(rng.uniform(-10, 10), resample=Image.Resampling.BILINEAR, center=(x, y))
            px = np.asarray(mask.resize((64, 64), Image.Resampling.BOX), dtype=np.float32) / 255
            save(paint(px, rng, 10.0), dest / split / letter / f"{letter}_{i:03d}.png")


def digits(dest: Path) -> None:
    from sklearn.datasets import load_digits

    data = load_digits()  # 1,797 scans, 8x8, grey levels 0..16
    for i, (img, label) in enumerate(zip(data.images, data.target, strict=True)):
        px = Image.fromarray(np.round(img * 255 / 16).astype(np.uint8))
        save(px.resize((32, 32), Image.Resampling.NEAREST), dest / str(label) / f"{i:04d}.png")


# What each set's maker knows of its labels (docs/generality.md, "Which transforms keep your labels"), as a
# user states it in params.yaml: the generated shapes and letters take random colours, so any hue keeps their
# class, and a mirrored shape is the same shape. The other sets keep params.yaml's statement (no flip, no hue).
DECLARED = {
    "shapes-few": ["train.flip=true", "train.hue=0.5"],
    "glyphs-26": ["train.hue=0.5"],
    "letters-small": ["train.hue=0.5"],
}

BUILDERS = {
    "signs-5": lambda d: copy_signs(signs_subset(0.05), d),
    "signs-10": lambda d: copy_signs(signs_subset(0.10), d),
    "signs-25": lambda d: copy_signs(signs_subset(0.25), d),
    "signs-45": lambda d: copy_signs(signs_subset(0.45), d),
    "signs": lambda d: copy_signs(signs_members(), d),
    "shapes-few": shapes_few,
    "grey-lowres": grey_lowres,
    "glyphs-26": glyphs,
    "photos-large": photos_large,
    "digits": digits,
    "letters-small": letters_small,
}


def files_in(folder: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(folder))


def ensure_set(name: str, sets: Path) -> Path:
    """``sets/name``, built unless complete there by this version of this script. The stamp (the file count and
    the script's hash) lies beside the set, not in it: the download stage would copy it into data/raw."""
    dest, stamp, partial = sets / name, sets / f"{name}.stamp", sets / f".{name}.partial"
    script = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
    if not (dest.is_dir() and stamp.exists() and stamp.read_text() == f"{files_in(dest)} {script}\n"):
        for old in (partial, dest):
            shutil.rmtree(old, ignore_errors=True)
        partial.mkdir(parents=True)
        BUILDERS[name](partial)
        partial.rename(dest)
        stamp.write_text(f"{files_in(dest)} {script}\n")
    return dest


def run_stages(workdir: Path, stages: tuple[str, ...], threads: int) -> tuple[str | None, list[str]]:
    """Run the stages in order: the failing stage's last error line (or None), and the lines that warn."""
    warnings = []
    for stage in stages:
        try:
            lines = [line for _, line in run_stage(workdir, stage, threads)]
        except StageFailed as failed:  # the row says why, and the other sets go on
            return failed.error, warnings + [line for line in failed.lines if "warning:" in line]
        warnings += [line for line in lines if "warning:" in line]
    return None, warnings


def prepare(name: str, source: Path, tmp: Path, args: argparse.Namespace) -> dict:
    wd = project(tmp / name / "data", [*DECLARED.get(name, []), *args.overrides], source=source)
    error, warnings = run_stages(wd, ("download", "split"), args.threads)
    if error:
        return {"error": error, "warnings": warnings}
    report = json.loads((wd / "metrics/data/split.json").read_text())  # the split's full report: sizes, copies
    keys = ("classes", "layout", "images", "excluded", "duplicate_pairs", "label_conflicts")
    return {**{k: report.get(k) for k in keys}, "split_report": report, "warnings": warnings}


def run_seed(name: str, source: Path, seed: int, tmp: Path, args: argparse.Namespace) -> dict:
    overrides = [*DECLARED.get(name, []), *args.overrides, f"seed={seed}"]
    # a seed's run: the set's one split, linked
    wd = project(tmp / name / f"seed{seed}", overrides, source=source, data_from=tmp / name / "data")
    error, _ = run_stages(wd, ("train", "evaluate"), args.threads)
    if error:
        return {"seed": seed, "error": error}
    end = json.loads((wd / "metrics/train/metrics.json").read_text())  # dvclive's last epoch
    gap = round(end["train"]["accuracy"] - end["val"]["accuracy"], 6)
    # the train stage's fingerprint (handsigns.fingerprint.fingerprint): this machine as the runs saw it
    fingerprint = json.loads((wd / "metrics/fingerprint.json").read_text())
    return {"seed": seed, **figures(wd), "end": end, "end_gap": gap, "fingerprint": fingerprint}


def summary(runs: list[dict]) -> dict:
    ok = [r for r in runs if "error" not in r]
    acc = [r["test"]["accuracy"] for r in ok]
    if not ok:
        return {}
    checked = all(r.get("ood") for r in ok)
    return {
        "test_accuracy_mean": mean(acc),
        "test_accuracy_min": min(acc),
        "best_epoch_mean": mean(r["best_epoch"] for r in ok),
        "epochs_run_max": max(r["epochs_run"] for r in ok),
        "end_gap_mean": mean(r["end_gap"] for r in ok),
        "ood_test_flagged_mean": mean(r["ood"]["test_flagged"] for r in ok) if checked else None,
        "ood_caught_mean": mean(r["ood"]["caught"] for r in ok) if checked else None,
        "train_seconds_mean": mean(r["seconds"] for r in ok),
    }


def ood(s: dict) -> str:
    if s.get("ood_test_flagged_mean") is None:  # ood.check off, or a run from before the check
        return "—"
    return f"{s['ood_test_flagged_mean']:.1%}, {s['ood_caught_mean']:.1%}"


def table(rows: dict) -> str:
    out = [
        "| set | classes | train/val/test (excluded) | test acc mean (min) | per seed "
        "| best-val epoch (mean) of epochs | end train−val gap (mean) | OOD: test flagged, outliers caught (mean) "
        "| train s (mean) |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    notes = [f"- {name}: {w}" for name, row in rows.items() for w in row["warnings"]]
    for name, row in rows.items():
        sizes = "—"
        if row.get("images"):
            sizes = "/".join(str(row["images"][s]) for s in ("train", "val", "test"))
            sizes += f" ({sum(row['excluded'].values())})"  # the reasons: in the JSON
        declared = f" ({', '.join(DECLARED[name])})" if name in DECLARED else ""
        head = f"| {name}{declared} | {row.get('classes') or '—'} | {sizes} |"
        runs, s = row.get("runs", []), row["summary"]
        notes += [f"- {name}, seed {r['seed']}: {r['error']}" for r in runs if "error" in r and s]
        if not s:
            error = row.get("error") or "; ".join(r["error"] for r in runs)
            out.append(f"{head} {error.replace('|', '/')[:160]} | — | — | — | — | — |")
            continue
        out.append(
            f"{head} {s['test_accuracy_mean']:.4f} ({s['test_accuracy_min']:.4f}) | "
            + " ".join("✗" if "error" in r else f"{r['test']['accuracy']:.4f}" for r in runs)
            + f" | {s['best_epoch_mean']:.1f} of {s['epochs_run_max']} | {s['end_gap_mean']:+.4f} | {ood(s)} | "
            f"{s['train_seconds_mean']:.0f} |"
        )
    return "\n".join(out + (["", *notes] if notes else [])) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default=",".join(BUILDERS), help=f"comma-separated, of: {', '.join(BUILDERS)}")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("-S", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    ap.add_argument("-j", "--jobs", type=int, default=max(1, (os.cpu_count() or 1) // threads))
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "handsigns-generality")
    ap.add_argument("--out", type=Path, default=RESULTS / "generality", metavar="PREFIX")
    args = ap.parse_args()
    args.threads, names = threads, args.sets.split(",")
    if unknown := [n for n in names if n not in BUILDERS]:
        raise SystemExit(f"error: unknown set(s) {', '.join(unknown)}; the sets: {', '.join(BUILDERS)}")
    sources = {}
    for name in names:
        print(f"generality: set {name} ...", flush=True)
        sources[name] = ensure_set(name, args.work / "sets")
    with tempfile.TemporaryDirectory(prefix="runs-", dir=args.work) as t, ThreadPoolExecutor(args.jobs) as pool:
        print(f"generality: download + split, {args.jobs} at once ...", flush=True)
        rows = dict(zip(names, pool.map(lambda n: prepare(n, sources[n], Path(t), args), names), strict=True))
        jobs = [(n, s) for n in names if "error" not in rows[n] for s in args.seeds]
        print(f"generality: train + evaluate, {len(jobs)} runs, {args.jobs} at once ...", flush=True)
        runs = list(pool.map(lambda job: run_seed(job[0], sources[job[0]], job[1], Path(t), args), jobs))
    for (name, _), run in zip(jobs, runs, strict=True):
        rows[name].setdefault("runs", []).append(run)
    for name, row in rows.items():
        row.update(source=str(sources[name]), summary=summary(row.get("runs", [])))
    machine = next((r["fingerprint"] for r in runs if "fingerprint" in r), None)  # None: no run trained
    for r in runs:
        r.pop("fingerprint", None)
    command = shlex.join(["python", "bench/generality.py", *sys.argv[1:]])
    date, overrides = time.strftime("%Y-%m-%d"), " ".join(args.overrides) or "(none: params.yaml as committed)"
    report = {"date": date, "command": command, "overrides": args.overrides, "seeds": args.seeds}
    report |= {"omp_num_threads": threads, "jobs": args.jobs, "machine": machine, "sets": rows}
    where = f"{machine['device_name']} ({machine['cpu_cores']} cores), {machine['precision']}" if machine else "?"
    md = (
        f"# The default recipe on other data sets\n\n`{command}`\n\noverrides: {overrides}; seeds "
        f"{' '.join(map(str, args.seeds))}; {where}, {threads} thread(s) a run, {args.jobs} at once; {date}\n\n"
        + table(rows)
    )
    write_results(args.out, report, md)
    print(f"\n{md}")


if __name__ == "__main__":
    main()
