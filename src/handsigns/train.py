"""The training loop: the course notes' loop (SGD, NLLLoss, per-epoch running loss/accuracy), made
reproducible and complete: seeded, per-sample augmentation on the device, lr schedules, label smoothing,
autocast, best-epoch selection by val accuracy with early stopping, and resuming an interrupted run from its
last complete epoch to the same bytes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from handsigns import checkpoint, distributed
from handsigns.augment import augment
from handsigns.dataset import Split, channel_stats, view
from handsigns.errors import UserError
from handsigns.files import leftovers
from handsigns.model import Classifier, build_net, head
from handsigns.params.recipe import RecipeParams
from handsigns.paths import BEST
from handsigns.runtime import (
    DECIDING_KEYS,
    autocast,
    channels_last,
    fingerprint,
    machine_names,
    resolve_device,
    resolve_precision,
    seed_everything,
)

VAL_BATCH = 256  # images per forward pass when scoring val during training (fixed: results never depend on it)


# --------------------------------------------------------------------------------- optimiser, schedule


def backbone_and_head(model: torch.nn.Module) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    """The parameters of ``model``'s network less its last layer, and of that layer (``model.head``)."""
    net = getattr(model, "net", model)
    top = f"{head(net)}."
    named = list(net.named_parameters())
    return [p for n, p in named if not n.startswith(top)], [p for n, p in named if n.startswith(top)]


def make_optimizer(recipe: RecipeParams, model: torch.nn.Module) -> torch.optim.Optimizer:
    t = recipe.train
    params: Any = model.parameters()
    if t.backbone_lr_scale != 1:  # two groups: the backbone at a fraction of the head's lr
        backbone, top = backbone_and_head(model)
        params = [{"params": backbone, "lr": recipe.lr * t.backbone_lr_scale}, {"params": top, "lr": recipe.lr}]
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    cls = torch.optim.Adam if t.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=recipe.lr, weight_decay=t.weight_decay)


def make_scheduler(recipe: RecipeParams, optimizer: torch.optim.Optimizer, total: int):
    """The lr schedule over ``total`` optimiser steps (stepped once per batch)."""
    if recipe.train.schedule == "onecycle":
        # cycle_momentum=False: train.momentum (sgd) and Adam's betas stay as params.yaml says
        peaks = [group["lr"] for group in optimizer.param_groups]
        peak = peaks[0] if len(peaks) == 1 else peaks
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=peak, total_steps=total, cycle_momentum=False)
    if recipe.train.schedule == "cosine":
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


@dataclass
class EpochStats:
    loss: float  # mean per-sample loss
    accuracy: float  # exact: correct / samples


def train_epoch(
    model: Classifier,
    forward,
    split: Split,
    order: torch.Tensor,
    optimizer,
    scheduler,
    recipe: RecipeParams,
    gen: torch.Generator,
    device: torch.device,
    precision: str,
    scaler,
    epoch: int,
    epochs: int,
) -> EpochStats:
    """One pass over ``split`` (its images and labels already on ``device``) in ``order``, this process's share;
    ``forward`` is ``model.log_probs``, or its DistributedDataParallel wrapper. The running loss and accuracy
    stay on the device until the epoch ends: no host synchronisation per step."""
    model.train()
    t = recipe.train
    order = order.to(split.labels.device)
    total_nll = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    batches = [order[start:end] for start, end in batch_bounds(len(order), recipe.batch_size // recipe.world_size)]
    bar = tqdm(
        zip(batches, batch_pixels(split, batches, device, recipe.world_size), strict=True),
        total=len(batches),
        desc=f"epoch {epoch}/{epochs}",
        leave=False,
        unit="batch",
        mininterval=0.5,
        disable=None,
    )
    for idx, pixels in bar:
        x = pixels.float().div_(255.0)
        y = split.labels[idx]
        if t.augment:
            x = augment(x, gen, t)
        with autocast(device, precision):
            logprobs = forward(x)
            loss = (
                F.nll_loss(logprobs.float(), y, reduction="mean")
                if t.label_smoothing == 0
                else F.cross_entropy(logprobs.float(), y, label_smoothing=t.label_smoothing)
            )
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
        total_nll += F.nll_loss(logprobs.detach().float(), y, reduction="sum")
        correct += (logprobs.detach().argmax(1) == y).sum()
    nll, right, seen = distributed.all_sum([total_nll.item(), float(correct), float(len(order))], device)
    if not math.isfinite(nll):
        raise UserError(f"training diverged at epoch {epoch} (loss is {nll}); lower lr in params.yaml")
    return EpochStats(nll / seen, right / seen)


def _as_is(batch: torch.Tensor) -> torch.Tensor:
    return batch


def _one_thread(_worker: int) -> None:
    torch.set_num_threads(1)  # a decoding worker: the cores belong to the workers side by side and the loop


def batch_pixels(split: Split, batches: list[torch.Tensor], device: torch.device, processes: int = 1):
    """The uint8 pixels of each batch of indices, in order, on ``device``: indexed from the in-memory tensor,
    or decoded by DataLoader workers (a map-style Dataset read through a batch sampler: the same batches)."""
    if not split.streamed:
        return (split.images[idx] for idx in batches)
    workers = max(1, min(8, (os.cpu_count() or 1) // processes - 1))  # a core left for the loop itself
    loader = torch.utils.data.DataLoader(
        split.images,
        batch_sampler=[idx.tolist() for idx in batches],
        num_workers=workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=4,
        multiprocessing_context="spawn" if device.type == "cuda" else None,  # no fork after CUDA is up
        generator=torch.Generator(),  # its workers' seed comes from here, not from the global RNG dropout uses
        collate_fn=_as_is,  # the batch is already one tensor (StreamedImages.__getitems__)
        worker_init_fn=_one_thread,
    )
    return (x.to(device, non_blocking=True) for x in loader)


def starting_weights(recipe: RecipeParams, net: torch.nn.Module, classes: list[str]) -> dict | None:
    """Load ``train.init_from`` or ``model.weights`` into ``net``; what was loaded, or None (a fresh start)."""
    from handsigns import pretrained

    if recipe.train.init_from:
        t = recipe.train
        return pretrained.start_from(net, classes, t.init_from, t.init_from_sha256, "train.init_from",
                                     "train.init_from_sha256")  # fmt: skip
    if recipe.model.weights:
        m = recipe.model
        return pretrained.start_from(net, classes, m.weights, m.weights_sha256, "model.weights", "model.weights_sha256")
    return None


def freeze_backbone(model: Classifier, world: distributed.World, frozen: bool, epoch: int) -> None:
    backbone, _ = backbone_and_head(model)
    if backbone and backbone[0].requires_grad == frozen:  # a change: say it once
        say(
            world,
            f"train: epoch {epoch}: the backbone is {'frozen, the head alone trains' if frozen else 'trained too'}",
        )
    for p in backbone:
        p.requires_grad_(not frozen)


class _LogProbs(torch.nn.Module):
    """DistributedDataParallel syncs gradients through a module's forward(); training's forward is log_probs."""

    def __init__(self, model: Classifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.log_probs(x)


def score_val(model: Classifier, val: Split, world: distributed.World, device, precision: str) -> EpochStats:
    """Val loss and accuracy, exact. Each process scores its shard (one process: all of val) and the sums are
    all-reduced, so every image counts once (no sampler padding) and every rank gets the same figures."""
    distributed.sync_buffers(model.net)
    part = distributed.shard(len(val), world)
    images, labels = view(val.images, part), val.labels[part]  # a streamed val is decoded batch by batch
    logprobs = checkpoint.log_probs(model, images, VAL_BATCH, device, precision)
    nll = F.nll_loss(logprobs, labels, reduction="sum").item() if len(labels) else 0.0
    right = int((logprobs.argmax(1) == labels).sum()) if len(labels) else 0
    nll, right, n = distributed.all_sum([nll, float(right), float(len(labels))], device)
    return EpochStats(nll / n, right / n)


def plan_epochs(recipe: RecipeParams, train_images: int) -> tuple[int, int]:
    """(epochs, optimiser steps per epoch): ``epochs``, raised where the data set is so small that they would
    take fewer than ``train.min_steps`` steps, so a small data set gets as many updates as a large one."""
    world = recipe.world_size  # each process takes an equal share (the sampler pads) in batches of its share
    steps = len(batch_bounds(math.ceil(train_images / world), recipe.batch_size // world))
    return max(recipe.epochs, math.ceil(recipe.train.min_steps / steps)), steps


# ---------------------------------------------------------------------------------------------------- resume


def signature(recipe: RecipeParams, classes: list[str], train: Split, val: Split, device, precision: str) -> dict:
    """What a run must share with the one that saved a resume checkpoint, each part hashed: params, data (every
    file's sha256 and label), code (this package, which decodes them) and machine (the fingerprint's deciding
    keys: other kernels or versions would give other last bits than an uninterrupted run)."""

    def digest(*parts: bytes) -> str:
        h = hashlib.sha256()
        for part in parts:
            h.update(hashlib.sha256(part).digest())
        return h.hexdigest()

    machine = {k: v for k, v in fingerprint(device, precision).items() if k in DECIDING_KEYS}
    files = [json.dumps([s.paths, s.sha256, s.labels.tolist()]).encode() for s in (train, val)]
    return {
        "params": digest(json.dumps(dataclasses.asdict(recipe), sort_keys=True).encode()),
        "data": digest(json.dumps(classes).encode(), *files),  # each file's bytes and label (the code decodes)
        "code": digest(*(f.read_bytes() for f in sorted(Path(__file__).parent.rglob("*.py")))),
        "machine": digest(json.dumps(machine, sort_keys=True).encode()),
    }


def say(world: distributed.World, line: str) -> None:
    """Print ``line`` from rank 0 only: one log, however many processes."""
    if world.main:
        print(line, flush=True)


def load_resume(path: Path, expected: dict) -> dict | None:
    """The resume state saved at ``path``, or None (and one line saying why) when it is missing, unreadable, or
    was saved by a run with other params, data, code or machine."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        saved, _ = state["signature"], state["rng"]  # a file of an older layout is as foreign as a damaged one
    except Exception as exc:  # a damaged or foreign file: never fatal, never trusted
        print(f"train: not resuming from {path}: unreadable ({type(exc).__name__}); starting over", flush=True)
        return None
    differ = [part for part in expected if saved.get(part) != expected[part]]
    if differ:
        print(f"train: not resuming from {path}: it was saved with other {', '.join(differ)}; starting over",
              flush=True)  # fmt: skip
        return None
    return state


def weights(model: Classifier) -> dict[str, torch.Tensor]:
    """A copy of the network's state on the CPU, in the default layout: never a view of the live parameters,
    which the next step changes in place."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.net.state_dict().items()}


def log_epoch(live, epoch: int, tr: EpochStats, va: EpochStats) -> None:
    if live is None:
        return
    live.step = epoch  # plots count epochs from 1, as the log does
    for split_name, stats in (("train", tr), ("val", va)):
        live.log_metric(f"{split_name}/loss", round(stats.loss, 6))
        live.log_metric(f"{split_name}/accuracy", round(stats.accuracy, 6))
    live.next_step()


# ------------------------------------------------------------------------------------------------------- fit


def fit(
    recipe: RecipeParams,
    classes: list[str],
    train: Split,
    val: Split,
    live=None,
    best_path: Path = BEST,
    resume_path: Path | None = None,
) -> dict[str, Any]:
    """Train; save the best epoch by val accuracy (ties: lower val loss) to ``best_path``. Returns the run's
    summary. With ``resume_path``, every complete epoch is saved there and a run with the same params, data,
    code and machine continues from it, ending with the bytes an uninterrupted run gives; the file is deleted
    when the run completes."""
    if len(train) < 2 or len(val) == 0:
        raise UserError(f"cannot train: {len(train)} train and {len(val)} val images; check the split stage")
    world = distributed.current()
    if world.size != recipe.world_size:
        raise UserError(f"{world.size} processes run, but params.yaml asks for {recipe.world_size} (nproc x "
                        "dist.nnodes); run the train stage through dvc repro, which launches them")  # fmt: skip
    device = resolve_device(recipe.train.device, world.local_rank if world.distributed else None)
    precision = resolve_precision(recipe.train.precision, device)
    seed_everything(recipe.seed, device, recipe.train.deterministic)
    distributed.setup(world, device)
    try:
        return _fit(recipe, classes, train, val, live, best_path, resume_path, world, device, precision)
    finally:
        distributed.teardown()


def _fit(recipe, classes, train, val, live, best_path, resume_path, world, device, precision) -> dict[str, Any]:
    # Each rank augments its own samples with its own stream (rank 0's is the single-process one).
    gen = torch.Generator().manual_seed(recipe.seed + world.rank)
    mean, std = channel_stats(train.images)
    net = build_net(len(classes), recipe.model)
    start = starting_weights(recipe, net, classes) if world.main else None  # DDP hands rank 0's to the rest
    model = Classifier(net, mean, std).to(device)
    if world.distributed:
        torch.manual_seed(recipe.seed + world.rank)  # the same initial weights on every rank; dropout masks differ
        if device.type == "cuda":
            model.net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model.net)  # state_dict names unchanged
    if channels_last(device):
        model = model.use_channels_last()
    if recipe.train.compile:
        model.net.compile()  # in place: the state_dict keeps its names
    forward = model.log_probs
    if world.distributed:
        ids = [device.index] if device.type == "cuda" else None
        forward = torch.nn.parallel.DistributedDataParallel(
            _LogProbs(model), device_ids=ids, find_unused_parameters=recipe.train.freeze_epochs > 0
        )
    epochs, steps = plan_epochs(recipe, len(train))
    # In memory, the whole uint8 training set moves to the device once (14 MB for SIGNS at 64 px) and batches are
    # indexed there; streamed, DataLoader workers decode each batch.
    on_device = dataclasses.replace(train, labels=train.labels.to(device))
    if not train.streamed:
        on_device.images = train.images.to(device)
    optimizer = make_optimizer(recipe, model)
    scheduler = make_scheduler(recipe, optimizer, epochs * steps)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None

    meta = {
        "classes": classes,
        "normalisation": {"mean": mean, "std": std},
        "model": dataclasses.asdict(recipe.model),
        "params": dataclasses.asdict(recipe),
        "start": start,
    }
    best: dict[str, Any] = {"accuracy": -1.0, "loss": float("inf"), "epoch": 0}
    best_checkpoint: dict[str, Any] = {}
    epochs_run, since_best, history, seconds_before = 0, 0, [], 0.0
    sig = signature(recipe, classes, train, val, device, precision) if resume_path else {}
    # Rank 0 reads (and judges) the resume file and hands it to the others: no file system shared across nodes
    state = distributed.broadcast(load_resume(resume_path, sig) if resume_path and world.main else None)
    if state is not None:
        model.net.load_state_dict(state["net"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        rng = state["rng"][world.rank]  # each rank its own streams
        gen.set_state(rng["generator"])
        torch.set_rng_state(rng["torch"])
        if device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], device)
        best, best_checkpoint, since_best = state["best"], state["best_checkpoint"], state["since_best"]
        epochs_run, history, seconds_before = state["epoch"], state["history"], state["seconds"]
        for epoch, tr_row, va_row in history:  # the curves so far: DVC deleted them with the stage's outputs
            log_epoch(live, epoch, EpochStats(*tr_row), EpochStats(*va_row))
        if best_checkpoint and world.main:
            checkpoint.save(best_path, best_checkpoint)
        say(world, f"train: resuming from {resume_path} after epoch {epochs_run} of {epochs}")
    started = time.perf_counter()
    try:
        for epoch in range(epochs_run + 1, epochs + 1):
            if recipe.train.patience and since_best >= recipe.train.patience:
                break  # a resumed run that had already stopped early
            if recipe.train.freeze_epochs:
                freeze_backbone(model, world, frozen=epoch <= recipe.train.freeze_epochs, epoch=epoch)
            if world.distributed:
                order = distributed.epoch_order(len(train), epoch, recipe.seed, world)
            else:
                order = torch.randperm(len(train), generator=gen)
            tr = train_epoch(model, forward, on_device, order, optimizer, scheduler, recipe, gen, device, precision,
                             scaler, epoch, epochs)  # fmt: skip
            va = score_val(model, val, world, device, precision)
            say(world, f"epoch {epoch:3d}/{epochs}  train loss {tr.loss:.4f} acc {tr.accuracy:.4f}  "
                       f"val loss {va.loss:.4f} acc {va.accuracy:.4f}")  # fmt: skip
            log_epoch(live, epoch, tr, va)
            history.append([epoch, [tr.loss, tr.accuracy], [va.loss, va.accuracy]])
            if (va.accuracy, -va.loss) > (best["accuracy"], -best["loss"]):
                best = {"accuracy": va.accuracy, "loss": va.loss, "epoch": epoch}
                since_best = 0
                best_checkpoint = {"state_dict": weights(model), "epoch": epoch, **meta}
                if world.main:
                    checkpoint.save(best_path, best_checkpoint)
            else:
                since_best += 1
            epochs_run = epoch
            if resume_path is not None:
                rng = {"generator": gen.get_state(), "torch": torch.get_rng_state(),
                       **({"cuda": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {})}  # fmt: skip
                rngs = distributed.all_gather(rng)
                if world.main:
                    checkpoint.save(resume_path, {
                        "signature": sig, "epoch": epoch, "history": history, "best": best, "since_best": since_best,
                        "best_checkpoint": best_checkpoint, "seconds": seconds_before + time.perf_counter() - started,
                        "net": weights(model), "rng": rngs,
                        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict() if scheduler else {},
                    })  # fmt: skip
            if recipe.train.patience and since_best >= recipe.train.patience:
                say(world, f"early stop: no better val result for {recipe.train.patience} epochs")
                break
    except torch.OutOfMemoryError:
        half = max(1, recipe.batch_size // 2)
        raise UserError(f"out of {device.type.upper()} memory training with batch_size {recipe.batch_size}; try "
                        f"a smaller batch: dvc exp run -S batch_size={half}") from None  # fmt: skip
    except KeyboardInterrupt:
        saved = (f"epochs 1-{epochs_run} are saved in {resume_path}: run `dvc repro` again to resume"
                 if resume_path is not None and epochs_run else "no complete epoch was saved")  # fmt: skip
        raise KeyboardInterrupt(f"training stopped in epoch {epochs_run + 1} of {epochs}; {saved}") from None
    if resume_path is not None and world.main:  # a completed run leaves nothing to resume, nor an empty folder
        resume_path.unlink(missing_ok=True)
        for stray in leftovers(resume_path):  # a checkpoint write a kill cut short
            stray.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            resume_path.parent.rmdir()
    seconds = seconds_before + time.perf_counter() - started
    machine = fingerprint(device, precision)
    return {
        "quality": {"best_epoch": best["epoch"], "epochs_run": epochs_run},
        "best": {"accuracy": best["accuracy"], "loss": best["loss"]},
        "runtime": {
            "train_seconds": round(seconds, 3),
            "train_images_per_s": round(epochs_run * len(train) / seconds, 1),
            "world_size": world.size,
            **machine_names(machine),
        },
        "fingerprint": machine,
    }
