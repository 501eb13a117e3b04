"""The training loop: the course notes' loop (SGD, NLLLoss, per-epoch running loss/accuracy), made
reproducible and complete: seeded, per-sample augmentation on the device, lr schedules, label smoothing,
autocast, best-epoch selection by val accuracy with early stopping, and an atomic checkpoint each epoch.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from handsigns.atomic import atomic_path, write_json
from handsigns.data import Split, augment, channel_stats, normalise
from handsigns.errors import UserError
from handsigns.model import Net, build_net
from handsigns.params.train import Hyper, ModelParams

MODELS_DIR = Path("models")
CHECKPOINT = MODELS_DIR / "checkpoint.pt"  # last epoch: weights, optimiser, scheduler, generators (for resuming)
BEST = MODELS_DIR / "best.pt"  # best epoch: weights + everything needed to rebuild and use the model
VAL_BATCH = 256  # images per forward pass when scoring val during training (fixed: results never depend on it)


# ------------------------------------------------------------------------------------ device, precision


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", name):
        raise UserError(f"params.yaml: train.device = {name!r} is not allowed; use auto, cpu, cuda, cuda:N or mps")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"params.yaml: train.device = {name!r} but CUDA is not available here; use auto or cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UserError(f"params.yaml: train.device = {name!r} but only {torch.cuda.device_count()} GPU(s) exist")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"params.yaml: train.device = {name!r} but MPS is not available here; use auto or cpu")
    return device


def resolve_precision(name: str, device: torch.device) -> str:
    """auto: bf16 on GPUs that support it (no loss scaling needed), fp32 elsewhere."""
    if name == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if name == "fp16" and device.type == "cpu":
        raise UserError("params.yaml: train.precision = fp16 needs a GPU; use fp32 or bf16 on the CPU")
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError("params.yaml: train.precision = bf16 but this GPU has no bf16; use fp16 or fp32")
    return name


def autocast(device: torch.device, precision: str):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def seed_everything(seed: int, device: torch.device, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if device.type == "cpu" or deterministic:
        torch.use_deterministic_algorithms(True, warn_only=False)
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True


# --------------------------------------------------------------------------------- optimiser, schedule


def make_optimizer(hyper: Hyper, model: torch.nn.Module) -> torch.optim.Optimizer:
    t = hyper.train
    if t.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=hyper.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    cls = torch.optim.Adam if t.optimizer == "adam" else torch.optim.AdamW
    return cls(model.parameters(), lr=hyper.lr, weight_decay=t.weight_decay)


def make_scheduler(hyper: Hyper, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    total = hyper.epochs * steps_per_epoch
    if hyper.train.schedule == "onecycle":
        # cycle_momentum=False: train.momentum (sgd) and Adam's betas stay as params.yaml says
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=hyper.lr, total_steps=total,
                                                   cycle_momentum=False)
    if hyper.train.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    return None


# ------------------------------------------------------------------------------------------ the loop


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """``(start, end)`` of each training batch; a last batch of one image joins the one before it
    (batch norm cannot normalise a single sample)."""
    bounds = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


def to_model_layout(x: torch.Tensor) -> torch.Tensor:
    """channels_last on CUDA, where the model's weights are channels_last too (tensor-core friendly)."""
    return x.contiguous(memory_format=torch.channels_last) if x.is_cuda else x


@dataclass
class EpochStats:
    loss: float  # mean per-sample loss
    accuracy: float  # exact: correct / samples


@torch.no_grad()
def predict_logprobs(model: torch.nn.Module, images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                     device: torch.device, precision: str, batch_size: int) -> torch.Tensor:
    """Log-probabilities (float32, CPU) for uint8 ``images``, in order."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = to_model_layout(normalise(images[start:start + batch_size].to(device), mean, std))
        with autocast(device, precision):
            out.append(model(x).float().cpu())
    return torch.cat(out) if out else torch.zeros((0, 0))


def score(logprobs: torch.Tensor, labels: torch.Tensor) -> EpochStats:
    n = len(labels)
    loss = F.nll_loss(logprobs, labels, reduction="sum").item() / n
    correct = int((logprobs.argmax(1) == labels).sum())
    return EpochStats(loss, correct / n)


def train_epoch(model: Net, split: Split, optimizer, scheduler, hyper: Hyper, gen: torch.Generator,
                mean: torch.Tensor, std: torch.Tensor, device: torch.device, precision: str,
                scaler, epoch: int) -> EpochStats:
    model.train()
    t = hyper.train
    order = torch.randperm(len(split), generator=gen)
    total_nll, correct, seen = 0.0, 0, 0
    bar = tqdm(batch_bounds(len(order), hyper.batch_size), desc=f"epoch {epoch}/{hyper.epochs}", leave=False,
               unit="batch", mininterval=0.5, disable=None)
    for start, end in bar:
        idx = order[start:end]
        x = split.images[idx].to(device, non_blocking=True).float().div_(255.0)
        y = split.labels[idx].to(device, non_blocking=True)
        if t.augment:
            x = augment(x, gen, t)
        x = to_model_layout(normalise(x, mean, std))
        with autocast(device, precision):
            logprobs = model(x)
            loss = F.nll_loss(logprobs.float(), y, reduction="mean") if t.label_smoothing == 0 else \
                F.cross_entropy(logprobs.float(), y, label_smoothing=t.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        # The curve reports plain NLL (comparable with val), whatever the objective's label smoothing.
        total_nll += F.nll_loss(logprobs.detach().float(), y, reduction="sum").item()
        correct += int((logprobs.argmax(1) == y).sum())
        seen += len(idx)
        bar.set_postfix(loss=f"{total_nll / seen:.4f}", acc=f"{correct / seen:.4f}")
    if not math.isfinite(total_nll):
        raise UserError(f"training diverged at epoch {epoch} (loss is {total_nll}); lower lr in params.yaml")
    return EpochStats(total_nll / seen, correct / seen)


def fit(hyper: Hyper, classes: list[str], train: Split, val: Split, live=None,
        models_dir: Path = MODELS_DIR) -> dict[str, Any]:
    """Train; keep the best epoch by val accuracy (ties: lower val loss). Returns the run's summary."""
    if len(train) < 2 or len(val) == 0:
        raise UserError(f"cannot train: {len(train)} train and {len(val)} val images; check the split stage")
    device = resolve_device(hyper.train.device)
    precision = resolve_precision(hyper.train.precision, device)
    seed_everything(hyper.seed, device, hyper.train.deterministic)
    gen = torch.Generator().manual_seed(hyper.seed)

    mean_l, std_l = channel_stats(train.images)
    mean = torch.tensor(mean_l, device=device).view(1, 3, 1, 1)
    std = torch.tensor(std_l, device=device).view(1, 3, 1, 1)
    model = build_net(len(classes), hyper.model).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(hyper, model)
    steps = len(batch_bounds(len(train), hyper.batch_size))
    scheduler = make_scheduler(hyper, optimizer, steps)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None

    meta = {"classes": classes, "normalisation": {"mean": mean_l, "std": std_l},
            "model": dataclasses.asdict(hyper.model), "hyper": dataclasses.asdict(hyper)}
    best: dict[str, Any] = {"accuracy": -1.0, "loss": float("inf"), "epoch": 0}
    epochs_run, since_best = 0, 0
    models_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for epoch in range(1, hyper.epochs + 1):
        tr = train_epoch(model, train, optimizer, scheduler, hyper, gen, mean, std, device, precision, scaler,
                         epoch)
        va = score(predict_logprobs(model, val.images, mean, std, device, precision, VAL_BATCH), val.labels)
        epochs_run = epoch
        print(f"epoch {epoch:3d}/{hyper.epochs}  train loss {tr.loss:.4f} acc {tr.accuracy:.4f}  "
              f"val loss {va.loss:.4f} acc {va.accuracy:.4f}", flush=True)
        if live is not None:
            live.step = epoch  # plots count epochs from 1, as the log does
            for split_name, stats in (("train", tr), ("val", va)):
                live.log_metric(f"{split_name}/loss", round(stats.loss, 6))
                live.log_metric(f"{split_name}/accuracy", round(stats.accuracy, 6))
            live.next_step()
        improved = (va.accuracy, -va.loss) > (best["accuracy"], -best["loss"])
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        if improved:
            best = {"accuracy": va.accuracy, "loss": va.loss, "epoch": epoch}
            since_best = 0
            save(models_dir / BEST.name, {"state_dict": state, "epoch": epoch, **meta})
        else:
            since_best += 1
        save(models_dir / CHECKPOINT.name, {
            "state_dict": state, "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else {},
            "epoch": epoch, "best": best, "generator": gen.get_state(),
            "torch_rng": torch.get_rng_state(), **meta})
        if hyper.train.patience and since_best >= hyper.train.patience:
            print(f"early stop: no better val result for {hyper.train.patience} epochs", flush=True)
            break
    seconds = time.perf_counter() - started
    return {
        "quality": {"best_epoch": best["epoch"], "epochs_run": epochs_run},
        "best": {"accuracy": best["accuracy"], "loss": best["loss"]},
        "runtime": {"train_seconds": round(seconds, 3),
                    "train_images_per_s": round(epochs_run * len(train) / seconds, 1)},
        "fingerprint": {"precision": precision, **hardware(device)},
    }


def save(path: Path, obj: dict) -> None:
    # Saved through a file object: torch.save(obj, path) names the archive's inner folder after the (random)
    # temporary file name, which would make identical checkpoints differ byte for byte.
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)


def load_checkpoint(path: Path) -> dict:
    if not path.exists():
        raise UserError(f"{path} not found; run the train stage first (dvc repro train)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for damaged or foreign files
        raise UserError(f"{path} is not a handsigns checkpoint ({type(exc).__name__}); re-run dvc repro train") \
            from None
    missing = {"state_dict", "classes", "model", "normalisation", "epoch"} - set(ckpt)
    if missing:
        raise UserError(f"{path} lacks {', '.join(sorted(missing))}; re-run dvc repro train")
    return ckpt


def load_model(path: Path = BEST) -> tuple[Net, dict]:
    """Rebuild the network of a saved best/checkpoint file; returns (model in eval mode, its metadata)."""
    ckpt = load_checkpoint(path)
    model = build_net(len(ckpt["classes"]), ModelParams(**ckpt["model"]))
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), ckpt


# ------------------------------------------------------------------------------------------- runtime


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _library_versions() -> dict[str, str | None]:
    """Versions of the libraries whose code shapes the outputs' bytes (decoding, curves, export)."""
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str | None] = {}
    for name in ("numpy", "pillow", "onnx", "onnxscript", "onnxruntime", "safetensors", "dvclive"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def hardware(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "device": str(device), "device_name": _cpu_model() if device.type == "cpu" else str(device),
        "cpu": _cpu_model(), "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the SIMD kernels torch picked (AVX512...)
        "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
        **_library_versions(),
        # the same keys on every run; CUDA/cuDNN versions only where they were used (not the torch build's)
        "cuda": None, "cudnn": None, "gpu": None, "gpu_memory_gib": None, "gpu_count": 0,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(device_name=props.name, gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    gpu_count=torch.cuda.device_count(), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None)
    return info


def write_train_outputs(summary: dict, metrics_path: Path, runtime_path: Path, fingerprint_path: Path) -> None:
    """Quality (best epoch, epochs run) and speed are DVC metrics; the fingerprint of the machine and software
    that ran (strings mostly) is a committed file beside them, read by ``handsigns gate``."""
    write_json(metrics_path, summary["quality"])
    write_json(runtime_path, summary["runtime"])
    write_json(fingerprint_path, summary["fingerprint"])
