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
REAL_ZIP_REL = "../shared/datasets/64x64_SIGNS.zip"
REAL_ZIP = (REPO / REAL_ZIP_REL).resolve()
VENV_BIN = Path(sys.executable).parent

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


def write_image(path: Path, seed: int, size: int | tuple[int, int] | None = None, *, mode: str = "RGB",
                kind: str = "smooth", fmt: str | None = None, **save_kw: Any) -> Path:
    """Write a generated image to ``path`` (format from the extension unless ``fmt``); return ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = fmt or _FORMATS[path.suffix.lower()]
    path.write_bytes(encode(image_array(seed, size, kind=kind), fmt, mode=mode, **save_kw))
    return path


@pytest.fixture(scope="session")
def real_zip() -> Path:
    """The real SIGNS zip, or a skip when this machine has no ../shared/datasets."""
    if not REAL_ZIP.is_file():
        pytest.skip(f"real SIGNS data not found at {REAL_ZIP_REL}")
    return REAL_ZIP


def make_project(dest: Path, data: dict[str, Any] | None = None, *, with_src: bool = False) -> Path:
    """A throw-away copy of the project in ``dest``: stages/, dvc.yaml, .dvcignore and params.yaml
    (the repository's, with the ``data`` section updated from ``data``)."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO / "stages", dest / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".dvcignore"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, dest / name)
    if with_src:  # dvc.yaml names the library's files as stage dependencies
        shutil.copytree(REPO / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    params = yaml.safe_load((REPO / "params.yaml").read_text()) or {}
    params.setdefault("data", {}).update(data or {})
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return dest


def project_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"  # dvc.yaml's `python` is the venv's
    env.update({"DVC_NO_ANALYTICS": "1", "PYTHONDONTWRITEBYTECODE": "1"}, **extra)
    return env


def run_stage(project: Path, stage: str, *, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    """Run ``stages/<stage>.py`` with this interpreter in ``project``; never raises on a non-zero exit."""
    return subprocess.run([sys.executable, f"stages/{stage}.py"], cwd=project, env=project_env(**env),
                          capture_output=True, text=True, timeout=timeout, check=False)


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
