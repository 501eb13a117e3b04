"""Shared fixtures: generated images, the real SIGNS zip, temp projects, running things (`run`, `dvc`,
`run_stage`) and one tiny exported model for the tests that need some model (`tiny_model`)."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image, ImageDraw

# pytest rewrites the asserts of test modules only: tests/helpers' checks should report their values too.
pytest.register_assert_rewrite("helpers")

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
DVC = str(VENV_BIN / "dvc")  # the environment's own dvc, whatever is on PATH
# In CI (.ci/run sets CI) a missing browser or server fails its tests instead of skipping them.
REQUIRED_IN_CI = bool(os.environ.get("CI"))


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: unknown to pytest without it
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`make test`'s scheduling (pytest-xdist, --dist loadgroup): each test goes to whichever worker is free,
    except that a module defining a module-scoped fixture (an expensive run its tests only read) goes to one
    worker whole, so the fixture is built once. (xdist's own xdist_group marks do not reach its scheduler under
    pytest 9.2, which derives node ids from another attribute than the one xdist renames.)"""
    if config.getoption("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    shared = {
        path.relative_to(config.rootpath).as_posix()
        for path in (REPO / "tests").glob("test_*.py")
        if 'scope="module"' in path.read_text(encoding="utf-8")
    }

    class SharedFixturesTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if module in shared else nodeid

    return SharedFixturesTogether(config, log)


TINY = {  # a model and a schedule small enough for a unit test on two CPU cores
    "seed": 0,
    "lr": 0.01,
    "epochs": 2,
    "batch_size": 16,
    "model": {"image_size": 16, "num_channels": 4, "dropout": 0.3},
    # exactly `epochs` epochs; the auto knobs pinned to their strength-0 values (handsigns.adapt)
    "train": {
        "min_steps": 0,
        "steps_factor": 1.0,
        "weight_decay": 5e-4,
        "max_rotation": 10.0,
        "min_scale": 0.9,
        "max_shift": 0.05,
        "erase": 0.0,
    },
    "evaluate": {"batch_size": 64},
}


def random_split(n: int, seed: int = 0, classes: int = 2, size: int = 16):
    """A :class:`handsigns.dataset.Split` of ``n`` random ``size`` px images, labels cycling over ``classes``:
    the in-process training tests' data (each seed other pixels and other file hashes)."""
    import torch

    from handsigns.dataset import Split

    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    paths = [f"{i}.png" for i in range(n)]
    return Split("x", images, torch.arange(n) % classes, paths, [f"{seed}:{p}" for p in paths])


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
        run(["git", "init", "-q"], dest)
        run(["git", "config", "user.email", "test@example.invalid"], dest)
        run(["git", "config", "user.name", "test"], dest)
        dvc(dest, "init", "-q")
        dvc(dest, "config", "core.analytics", "false")
        run(["git", "add", "-A"], dest)
        run(["git", "commit", "-qm", "project"], dest)
    return dest


# What every process a test starts gets on top of the caller's environment: DVC's analytics off, and its
# bytecode in one cache beside the venv, written even where the caller forbids writing bytecode (an empty value
# is unset): nothing lands in the projects, and no process compiles torch, DVC or the ONNX exporter from source
# again (a venv that uv installed has no .pyc files; without a cache a tiny pipeline run takes about twice as
# long: docs/comparing-runs.md).
SUBPROCESS_ENV = {
    "DVC_NO_ANALYTICS": "1",
    "PYTHONPYCACHEPREFIX": str(VENV_BIN.parent / "pycache"),
    "PYTHONDONTWRITEBYTECODE": "",
}


def project_env(**extra: str) -> dict[str, str]:
    """This process's environment for a subprocess: the venv first on PATH (dvc.yaml's `python` is the venv's),
    and :data:`SUBPROCESS_ENV`; then ``extra``. For what must run alongside the test (``subprocess.Popen``);
    what the test waits for goes through :func:`run`."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(SUBPROCESS_ENV, **extra)
    return env


# Running things: `run` for any program (git, make, `python -m handsigns.cli`, `python -c`), `dvc` for DVC and
# `run_stage` for one stage script. Each waits, captures text output, and with ``check`` fails the test with
# the command's exit status and the tail of its output.


def run(
    cmd: list[str], cwd: Path, *, check: bool = True, timeout: float = 900, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``cmd`` in ``cwd`` in :func:`project_env` (unbuffered; ``env`` added) and wait for it, at most
    ``timeout`` s. With ``check`` (the default) a non-zero exit fails the test with the command's output."""
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


def dvc(
    cwd: Path, *args: str, check: bool = True, timeout: float = 900, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``dvc ARGS`` in ``cwd`` with the environment's own dvc (:data:`DVC`): :func:`run` otherwise."""
    return run([DVC, *args], cwd, check=check, timeout=timeout, env=env)


def run_stage(
    project: Path, name: str, *, check: bool = False, timeout: float = 900, **env: str
) -> subprocess.CompletedProcess:
    """``python stages/<name>.py`` in ``project`` with this interpreter, as `dvc repro` runs it (keywords:
    environment variables to set): :func:`run` otherwise, except that by default a failure is returned, not
    raised, for the test to read its exit status and error line; ``check=True`` fails the test instead."""
    return run([sys.executable, f"stages/{name}.py"], project, check=check, timeout=timeout, env=env)


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


@pytest.fixture
def payload(tmp_path: Path) -> dict[str, bytes]:
    """What every archive in the download tests holds, by path: three small images and a text file."""
    files = {"pics/0_a.png": None, "pics/1_b.png": None, "pics/sub/2_c.png": None, "notes.txt": b"hello\n"}
    out = {}
    for seed, (name, data) in enumerate(files.items()):
        if data is None:
            data = write_image(tmp_path / "gen" / f"{seed}.png", seed, 40, kind="noise").read_bytes()
        out[name] = data
    return out


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


SIGNS_ZIP = REPO / "datasets/64x64_SIGNS.zip"


@dataclass(frozen=True)
class TinyModel:
    """The model stages' outputs of a tiny run, laid out as in a project under ``root``: data/raw/ (the SIGNS
    photos), models/ (best.pt and its export: model.safetensors, model.onnx, model.json) and
    metrics/eval/predictions_test.csv (evaluate's table of the test photos, paths relative to data/raw)."""

    root: Path
    classes: list[str]
    photos: dict[str, list[Path]]  # "train", "test": the photos it was trained on and checked on

    @property
    def best(self) -> Path:
        return self.root / "models/best.pt"

    @property
    def onnx(self) -> Path:
        return self.root / "models/model.onnx"

    @property
    def safetensors(self) -> Path:
        return self.root / "models/model.safetensors"

    @property
    def card(self) -> Path:
        return self.root / "models/model.json"


def train_and_export(
    root: Path, classes: list[str], files: dict[str, list[str]], recipe: dict[str, Any] | None = None
) -> TinyModel:
    """Train in process (seconds, no stage subprocesses) on ``files["train"]`` (paths under ``root``/data/raw,
    each labelled by its class folder or, SIGNS-style, its name's first character), ``files["test"]``
    standing in for val; then score with evaluate's code and export with the export stage's
    (``export_verified``: ONNX Runtime checked against PyTorch on the test images). ``recipe``: TINY's keys
    overridden (nested dicts merged)."""
    import torch

    from handsigns import checkpoint, ood
    from handsigns.dataset import Split, decode_all
    from handsigns.evaluate import calibrate, evaluate_split
    from handsigns.export import export_verified
    from handsigns.files import sha256_file
    from handsigns.params import build
    from handsigns.params.recipe import RecipeParams
    from handsigns.train import fit

    raw = root / "data/raw"
    knobs = {k: dict(v) if isinstance(v, dict) else v for k, v in TINY.items()}
    for key, value in (recipe or {}).items():
        knobs[key] = {**knobs[key], **value} if isinstance(value, dict) else value
    recipe_params = build(RecipeParams, knobs)
    size = recipe_params.model.image_size

    def label(f: str) -> int:
        parent = Path(f).parent.name
        return classes.index(parent if parent in classes else Path(f).name[0])

    def split(name: str, names: list[str]) -> Split:
        labels = torch.tensor([label(f) for f in names])
        return Split(
            name, decode_all([raw / f for f in names], size), labels, names, [sha256_file(raw / f) for f in names]
        )

    train, test = split("train", files["train"]), split("test", files["test"])
    models = root / "models"
    fit(recipe_params, classes, train, test, best_path=models / "best.pt")
    module, ckpt = checkpoint.load_model(models / "best.pt")
    metrics, _, predictions, logprobs = evaluate_split(module, test, classes, 64)
    (root / "metrics/eval").mkdir(parents=True)
    predictions.to_csv(root / "metrics/eval/predictions_test.csv", index=False, lineterminator="\n")
    scored = (logprobs, test.labels.numpy())
    evaluation = {"val": metrics, "test": metrics, "calibration": calibrate(scored, scored)[0]}
    splits, checks = {"train": train, "val": test, "test": test}, recipe_params.ood
    evaluation["ood"], detector = ood.report(module, splits, len(classes), checks, size, 64)
    export_verified(module, ckpt, test.images, evaluation, {}, models, detector=detector)
    return TinyModel(root, classes, {s: [raw / n for n in ns] for s, ns in files.items()})


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """Some exported model, for every test that needs one but not a particular one (predict, serve, starting
    weights): :func:`train_and_export` with the TINY recipe (16 px, 2 epochs) on every 20th train and every
    10th test photo of the shipped SIGNS zip (54 + 12, six classes). Shared: read it, never change it; a test
    that edits a file copies it first."""
    root = tmp_path_factory.mktemp("tiny-model")
    with zipfile.ZipFile(SIGNS_ZIP) as zf:
        names = sorted(n for n in zf.namelist() if n.endswith(".jpg"))
        picked = {
            s: [n for n in names if f"/{s}_signs/" in n][:: 20 if s == "train" else 10] for s in ("train", "test")
        }
        for name in picked["train"] + picked["test"]:
            zf.extract(name, root / "data/raw")
    return train_and_export(root, list("012345"), picked)


def outlier_folder(folder: Path, size: int, per_set: int) -> Path:
    """handsigns.outliers' pictures as PNG files in ``folder``, as a user would hand them to predict."""
    from PIL import Image

    from handsigns import outliers

    folder.mkdir()
    for name, pixels in outliers.sets(size, per_set=per_set).items():
        for i, picture in enumerate(pixels):
            Image.fromarray(picture).save(folder / f"{name}-{i}.png")
    return folder


@pytest.fixture
def gpu(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """A stubbed CUDA GPU; call it with the compute capability (and name) it should report."""
    from types import SimpleNamespace

    import torch  # here, not at the top: most tests never load torch

    def at(major: int, minor: int, name: str = "NVIDIA Test GPU") -> None:
        props = SimpleNamespace(name=name, major=major, minor=minor, total_memory=16 * 2**30)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (major, minor))
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: props)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # torch's answer

    return at


@pytest.fixture
def tf32_state() -> Any:
    """torch's TF32 switches as they were, put back after the test (they are process-wide, and properties that
    monkeypatch cannot restore)."""
    import torch

    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
