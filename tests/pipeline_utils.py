"""Helpers for tests that run the real pipeline (stage scripts, dvc) in a temporary project copy."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SIGNS_ZIP = (ROOT / ".." / "shared" / "datasets" / "64x64_SIGNS.zip").resolve()

TINY = {  # a model and a schedule small enough for a unit test on two CPU cores
    "seed": 0, "lr": 0.01, "epochs": 2, "batch_size": 16,
    "model": {"image_size": 16, "num_channels": 4},
    "train": {"eval_batch_size": 64},
}


def make_project(dest: Path, source: str | Path, overrides: dict | None = None, git: bool = False) -> Path:
    """A copy of the project (code, stages, dvc.yaml, params.yaml) with data.source pointing at ``source``."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("stages", "src"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, dest / name)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["source"] = str(source)
    for key, value in (overrides or {}).items():
        if isinstance(value, dict):
            params.setdefault(key, {}).update(value)
        else:
            params[key] = value
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if git:
        run(["git", "init", "-q"], dest)
        run(["git", "config", "user.email", "test@example.invalid"], dest)
        run(["git", "config", "user.name", "test"], dest)
        run([str(BIN / "dvc"), "init", "-q"], dest)
        run([str(BIN / "dvc"), "config", "core.analytics", "false"], dest)
        run(["git", "add", "-A"], dest)
        run(["git", "commit", "-qm", "project"], dest)
    return dest


def run(cmd: list[str], cwd: Path, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def stage(name: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return run([sys.executable, f"stages/{name}.py"], cwd, check=check)


def colour_dataset(root: Path, classes: int = 3, per_class: int = 30, size: int = 20, seed: int = 0) -> Path:
    """An ImageFolder data set a tiny CNN can learn: class k is a bright blob of hue k on noise."""
    rng = np.random.default_rng(seed)
    palette = [(230, 40, 40), (40, 200, 60), (50, 70, 230), (220, 220, 40), (200, 60, 200), (40, 210, 210)]
    for k in range(classes):
        d = root / f"class_{k}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = rng.integers(0, 90, (size, size, 3)).astype(np.uint8)
            y, x = rng.integers(0, size // 2, 2)
            img[y:y + size // 2, x:x + size // 2] = palette[k % len(palette)]
            Image.fromarray(img).save(d / f"{k}_{i:03d}.png")
    return root
