"""Shared fixtures: generated images, the real SIGNS zip, and running a stage script in a temp project."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
DVC = str(VENV_BIN / "dvc")  # the environment's own dvc, whatever is on PATH
# In CI (.ci/run sets CI) a missing browser or server fails its tests instead of skipping them.
REQUIRED_IN_CI = bool(os.environ.get("CI"))

TINY = {  # a model and a schedule small enough for a unit test on two CPU cores
    "seed": 0,
    "lr": 0.01,
    "epochs": 2,
    "batch_size": 16,
    "model": {"image_size": 16, "num_channels": 4},
    "train": {"min_steps": 0},  # exactly `epochs` epochs
    "evaluate": {"batch_size": 64},
}

_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".webp": "WEBP"}


def image_array(seed: int, size: int | tuple[int, int] | None = None, *, kind: str = "smooth") -> np.ndarray:
    """A ``h x w x 3`` uint8 picture, different for every seed (never a near-duplicate of another seed).

    ``smooth``: a random colour field (a random 8..12 grid upsampled) with an ellipse and a rectangle drawn
    in outline (no flat areas: their dHash bits flip under the slightest noise). At 40 px and more its
    difference hash survives re-encoding and +-2 noise, so copies of it are reliably near-duplicates.
    ``noise``: independent random pixels.
    """
    rng = np.random.default_rng(seed)
    if size is None:
        size = int(rng.integers(16, 41))
    w, h = (size, size) if isinstance(size, int) else size
    if kind == "noise":
        return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    grid = int(rng.integers(8, 13))
    low = rng.integers(0, 256, (grid, grid, 3), dtype=np.uint8)
    img = Image.fromarray(low).resize((w, h), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(img)
    for shape in (draw.ellipse, draw.rectangle):
        x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
        x1, y1 = x0 + int(rng.integers(3, w // 2 + 1)), y0 + int(rng.integers(3, h // 2 + 1))
        shape([x0, y0, x1, y1], outline=tuple(int(v) for v in rng.integers(0, 256, 3)), width=2)
    return np.asarray(img, dtype=np.uint8)


def encode(arr: np.ndarray, fmt: str = "PNG", *, mode: str = "RGB", **save_kw: Any) -> bytes:
    """``arr`` encoded as ``fmt`` (JPEG, PNG, BMP, WEBP) in Pillow mode ``mode`` (RGB, RGBA, L, P...)."""
    img = Image.fromarray(arr)
    if mode == "RGBA":
        alpha = np.linspace(64, 255, arr.shape[1], dtype=np.uint8)[None, :].repeat(arr.shape[0], 0)
        img = img.convert("RGBA")
        img.putalpha(Image.fromarray(alpha))
    elif mode != "RGB":
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt, **save_kw)
    return buf.getvalue()


def bomb_jpeg(path: Path, side: int = 8000) -> Path:
    """A JPEG of a few hundred bytes whose header claims ``side`` x ``side`` pixels (its frame header patched):
    the decompression bomb's shape. Decoded, 8,000 x 8,000 RGB would take 192 MB."""
    data = bytearray(encode(np.full((16, 16, 3), 128, np.uint8), "JPEG"))
    sof = data.index(b"\xff\xc0")  # baseline frame: marker, length (2), precision (1), height (2), width (2)
    data[sof + 5 : sof + 9] = side.to_bytes(2, "big") * 2
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def write_image(
    path: Path,
    seed: int,
    size: int | tuple[int, int] | None = None,
    *,
    mode: str = "RGB",
    kind: str = "smooth",
    fmt: str | None = None,
    **save_kw: Any,
) -> Path:
    """Write a generated image to ``path`` (format from the extension unless ``fmt``); return ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = fmt or _FORMATS[path.suffix.lower()]
    path.write_bytes(encode(image_array(seed, size, kind=kind), fmt, mode=mode, **save_kw))
    return path


def make_project(
    dest: Path, data: dict[str, Any] | None = None, *, overrides: dict[str, Any] | None = None, git: bool = False
) -> Path:
    """A throw-away copy of the project in ``dest``: stages/, src/ (dvc.yaml names its files as stage
    dependencies), datasets/ (the default data), dvc.yaml, .dvcignore, .gitignore and params.yaml (the
    repository's, with the ``data`` section updated from ``data`` — another ``source`` gets ``sha256`` null
    unless given — and other keys from ``overrides``; nested dicts are merged). ``git``: also `git init` +
    `dvc init` and commit, as a clone would be."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("stages", "src", "datasets"):
        shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy2(REPO / name, dest / name)
    params = yaml.safe_load((REPO / "params.yaml").read_text()) or {}
    data = dict(data or {})
    if "source" in data:  # the default's sha256 pins the shipped zip, not another source
        data.setdefault("sha256", None)
    params.setdefault("data", {}).update(data)
    for key, value in (overrides or {}).items():
        if isinstance(value, dict):
            params.setdefault(key, {}).update(value)
        else:
            params[key] = value
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if git:
        for cmd in (
            ["git", "init", "-q"],
            ["git", "config", "user.email", "test@example.invalid"],
            ["git", "config", "user.name", "test"],
            [DVC, "init", "-q"],
            [DVC, "config", "core.analytics", "false"],
            ["git", "add", "-A"],
            ["git", "commit", "-qm", "project"],
        ):
            run(cmd, dest)
    return dest


def project_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"  # dvc.yaml's `python` is the venv's
    env.update({"DVC_NO_ANALYTICS": "1", "PYTHONDONTWRITEBYTECODE": "1"}, **extra)
    return env


def run_stage(project: Path, stage: str, *, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    """Run ``stages/<stage>.py`` with this interpreter in ``project``; never raises on a non-zero exit."""
    return subprocess.run(
        [sys.executable, f"stages/{stage}.py"],
        cwd=project,
        env=project_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run(
    cmd: list[str], cwd: Path, check: bool = True, timeout: float = 900, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``cmd`` in ``cwd`` with the venv first on PATH (and ``env`` added); with ``check``, fail the test
    with its output."""
    proc = subprocess.run(
        cmd,
        cwd=cwd,
        env=project_env(PYTHONUNBUFFERED="1", **(env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def stage(name: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``stages/<name>.py`` in ``cwd``; with ``check``, fail the test unless it succeeds."""
    return run([sys.executable, f"stages/{name}.py"], cwd, check=check)


def assert_user_error_exit(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    """The stage failed the user-error way: exit 2, exactly one ``error: ...`` line on stderr, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture
def stage_project(tmp_path: Path) -> Callable[..., Path]:
    """``stage_project(data={...})`` builds a temp project (see :func:`make_project`) and returns its path."""

    def make(data: dict[str, Any] | None = None, name: str = "project", **kw: Any) -> Path:
        return make_project(tmp_path / name, data, **kw)

    return make


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
            img[y : y + size // 2, x : x + size // 2] = palette[k % len(palette)]
            Image.fromarray(img).save(d / f"{k}_{i:03d}.png")
    return root
