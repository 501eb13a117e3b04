"""What the bench scripts share: a throwaway project to run the pipeline's stages in, the stage runner, a run's
figures, and the results writer (bench/results/NAME.json and NAME.md).

A script imports it as a sibling: `python bench/x.py` puts bench/ first on sys.path. Only the standard library and
PyYAML here: nothing heavier than what the scripts that import it need already.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench/results"
SIGNS_ZIP = ROOT / "datasets/64x64_SIGNS.zip"  # params.yaml's data.source, as a path a throwaway project can read


def parse_override(text: str) -> tuple[list[str], object]:
    key, _, value = text.partition("=")
    if not _:
        raise SystemExit(f"error: override {text!r} is not key=value")
    return key.split("."), yaml.safe_load(value)


def apply_overrides(params: dict, overrides: Sequence[str]) -> dict:
    """``params`` with each ``key.sub=value`` override set (values parsed as YAML, as `dvc exp run -S`)."""
    for text in overrides:
        keys, value = parse_override(text)
        node = params
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return params


def project(
    workdir: Path, overrides: Sequence[str] = (), *, source: Path | None = None, data_from: Path | None = None
) -> Path:
    """A throwaway project in ``workdir``: stages/ and params.yaml with ``overrides``; the workspace is never
    touched. ``source``: data.source (unpinned), for a project that runs its own download and split.
    ``data_from``: a project whose data/raw and data/index are linked in (ROOT: the workspace's split)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    if source is not None:
        params["data"].update({"source": str(source), "sha256": None})
    shutil.copytree(ROOT / "stages", workdir / "stages")
    (workdir / "params.yaml").write_text(yaml.safe_dump(apply_overrides(params, overrides), sort_keys=False))
    if data_from is not None:
        (workdir / "data").mkdir()
        for name in ("raw", "index"):
            os.symlink(data_from / "data" / name, workdir / "data" / name)
    return workdir


class StageFailed(SystemExit):
    """A stage exited non-zero. Uncaught, it ends the script with the stage's stderr (a SystemExit: no
    traceback of the runner); caught, ``error`` is its one-line reason for a results table."""

    def __init__(self, workdir: Path, stage: str, code: int, lines: list[str], stderr: str) -> None:
        super().__init__(f"{workdir.name}: stage {stage} failed:\n{stderr[-2000:]}")
        last = [line.strip() for line in stderr.splitlines() if line.strip()] or [f"exit {code}"]
        self.stage, self.lines, self.error = stage, lines, f"{stage}: {last[-1]}"


def run_stage(workdir: Path, stage: str, threads: int | str | None = None) -> list[tuple[float, str]]:
    """Run ``stages/STAGE.py`` in ``workdir`` as `dvc repro` would, on ``threads`` OMP threads (default: the
    environment's OMP_NUM_THREADS, else 1): its output lines, each with the seconds since it started, and last
    the total seconds with an empty line. Raises StageFailed."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads or os.environ.get("OMP_NUM_THREADS", "1")),
        # the venv's bin first, as dvc.yaml's PATH: nproc > 1 runs torchrun
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    started = time.perf_counter()
    # stderr to a file, not a pipe: a stage that writes much there while stdout is read would block on it
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            [sys.executable, f"stages/{stage}.py"], cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=err, text=True
        )
        lines = [(time.perf_counter() - started, line.rstrip("\n")) for line in proc.stdout]
        code = proc.wait()
        if code:
            err.seek(0)
            raise StageFailed(workdir, stage, code, [line for _, line in lines], err.read())
    return [*lines, (time.perf_counter() - started, "")]


def figures(workdir: Path) -> dict:
    """A project's train and evaluate figures: train.json's, val and test metrics, the out-of-distribution check,
    test images and errors, train seconds."""
    train = json.loads((workdir / "metrics/train.json").read_text())
    ev = json.loads((workdir / "metrics/eval.json").read_text())
    runtime = json.loads((workdir / "metrics/runtime.json").read_text())
    with open(workdir / "metrics/eval/predictions_test.csv", newline="", encoding="utf-8") as f:
        test = list(csv.DictReader(f))
    return {
        **train,
        "val": ev["val"],
        "test": ev["test"],
        "ood": ev.get("ood"),  # the out-of-distribution check: test flagged, outliers caught (absent: ood.check off)
        "test_images": len(test),
        "test_errors": sum(row["actual"] != row["predicted"] for row in test),
        "seconds": runtime["train_seconds"],
    }


def write_results(prefix: Path, report: dict, md: str) -> None:
    """``report`` as PREFIX.json and the table ``md`` as PREFIX.md (default prefixes: bench/results/NAME)."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    prefix.with_name(prefix.name + ".json").write_text(json.dumps(report, indent=2) + "\n")
    prefix.with_name(prefix.name + ".md").write_text(md)
