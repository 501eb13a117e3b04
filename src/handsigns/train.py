"""The training loop: the course notes' loop (SGD, NLLLoss, per-epoch running loss/accuracy), made
reproducible and complete: seeded, per-sample augmentation on the device, lr schedules, label smoothing,
autocast, best-epoch selection by val accuracy with early stopping, and resuming an interrupted run from its
last complete epoch to the same bytes.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from handsigns import adapt, checkpoint, distributed, resume
from handsigns.adapt import plan_epochs
from handsigns.augment import augment, mix
from handsigns.dataset import Split, StreamedImages, batch_bounds, batch_pixels, channel_stats, view
from handsigns.errors import UserError
from handsigns.fingerprint import fingerprint, machine_names
from handsigns.model import Classifier, build_net, head
from handsigns.params import decided
from handsigns.params.recipe import RecipeParams
from handsigns.paths import BEST
from handsigns.runtime import (
    autocast,
    channels_last,
    configure_math,
    resolve_device,
    resolve_precision,
    seed_everything,
)

VAL_BATCH = 64  # images per forward pass scoring val during training (fixed; 256 took twice as long on a CPU)


# --------------------------------------------------------------------------------- optimiser, schedule


def backbone_and_head(model: torch.nn.Module) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    """The parameters of ``model``'s network less its last layer, and of that layer (``model.head``)."""
    net = getattr(model, "net", model)
    top = f"{head(net)}."
    named = list(net.named_parameters())
    return [p for n, p in named if not n.startswith(top)], [p for n, p in named if n.startswith(top)]


def make_optimizer(recipe: RecipeParams, model: torch.nn.Module) -> torch.optim.Optimizer:
    t = recipe.train
    weight_decay = decided("train.weight_decay", t.weight_decay)
    params: Any = model.parameters()
    if t.backbone_lr_scale != 1:  # two groups: the backbone at a fraction of the head's lr
        backbone, top = backbone_and_head(model)
        params = [{"params": backbone, "lr": recipe.lr * t.backbone_lr_scale}, {"params": top, "lr": recipe.lr}]
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=t.momentum, weight_decay=weight_decay)
    cls = torch.optim.Adam if t.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=recipe.lr, weight_decay=weight_decay)


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


# ----------------------------------------------------------------------------------------------- the model


def starting_weights(recipe: RecipeParams, net: torch.nn.Module, classes: list[str]) -> dict | None:
    """Load ``train.init_from`` or ``model.weights`` into ``net``; what was loaded, or None (a fresh start)."""
    from handsigns import pretrained

    t, m = recipe.train, recipe.model
    if t.init_from:  # the keys are named in its errors
        return pretrained.start_from(
            net, classes, t.init_from, t.init_from_sha256, "train.init_from", "train.init_from_sha256"
        )
    if m.weights:
        return pretrained.start_from(net, classes, m.weights, m.weights_sha256, "model.weights", "model.weights_sha256")
    return None


def build_model(
    recipe: RecipeParams, classes: list[str], train: Split, world: distributed.World, device: torch.device
) -> tuple[Classifier, dict[str, Any]]:
    """The classifier to train, on ``device``, and what every checkpoint of it holds besides the weights."""
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
    meta = {
        "classes": classes,
        "normalisation": {"mean": mean, "std": std},
        "model": dataclasses.asdict(recipe.model),
        "params": dataclasses.asdict(recipe),
        "start": start,
    }
    return model, meta


def freeze_backbone(model: Classifier, world: distributed.World, frozen: bool, epoch: int) -> None:
    backbone, _ = backbone_and_head(model)
    if backbone and backbone[0].requires_grad == frozen:  # a change: say it once
        now = "frozen, the head alone trains" if frozen else "trained too"
        world.say(f"train: epoch {epoch}: the backbone is {now}")
    for p in backbone:
        p.requires_grad_(not frozen)


class _LogProbs(torch.nn.Module):
    """DistributedDataParallel syncs gradients through a module's forward(); training's forward is log_probs."""

    def __init__(self, model: Classifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.log_probs(x)


# ------------------------------------------------------------------------------------------------ the loop


@dataclass
class Loop:
    """What every epoch of one run shares: the recipe, where and how it computes, and what steps the weights."""

    recipe: RecipeParams
    world: distributed.World
    device: torch.device
    precision: str
    epochs: int  # as planned (plan_epochs)
    gen: torch.Generator  # this rank's augmentation stream (and, in one process, the data order)
    forward: Callable[[torch.Tensor], torch.Tensor]  # model.log_probs, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    scheduler: Any  # stepped once per batch; None: a constant lr
    scaler: torch.amp.GradScaler | None  # fp16 only


def make_loop(
    recipe: RecipeParams, model: Classifier, train_images: int, world: distributed.World, device, precision: str
) -> Loop:
    forward: Callable[[torch.Tensor], torch.Tensor] = model.log_probs
    if world.distributed:
        ids = [device.index] if device.type == "cuda" else None
        forward = torch.nn.parallel.DistributedDataParallel(
            _LogProbs(model), device_ids=ids, find_unused_parameters=recipe.train.freeze_epochs > 0
        )
    epochs, steps = plan_epochs(recipe, train_images)
    optimizer = make_optimizer(recipe, model)
    return Loop(
        recipe,
        world,
        device,
        precision,
        epochs,
        gen=torch.Generator().manual_seed(recipe.seed + world.rank),  # rank 0's is the single-process one
        forward=forward,
        optimizer=optimizer,
        scheduler=make_scheduler(recipe, optimizer, epochs * steps),
        scaler=torch.amp.GradScaler(device.type) if precision == "fp16" else None,
    )


@dataclass
class EpochStats:
    loss: float  # mean per-sample loss
    accuracy: float  # exact: correct / samples


def objective(logprobs: torch.Tensor, y: torch.Tensor, smoothing: float) -> torch.Tensor:
    """The mean training loss: NLL, or cross-entropy with ``smoothing``."""
    if smoothing == 0:
        return F.nll_loss(logprobs.float(), y, reduction="mean")
    return F.cross_entropy(logprobs.float(), y, label_smoothing=smoothing)


def step(loop: Loop, x: torch.Tensor, y: torch.Tensor, mixed: tuple[torch.Tensor, float] | None = None) -> torch.Tensor:
    """One optimiser step on batch ``x`` (float pixels in [0, 1]) with labels ``y``; its log-probabilities.
    ``mixed``: the batch is a mix (:func:`handsigns.augment.mix`) of ``y`` with these labels, at weight ``lam``."""
    smoothing = loop.recipe.train.label_smoothing
    with autocast(loop.device, loop.precision):
        logprobs = loop.forward(x)
        loss = objective(logprobs, y, smoothing)
        if mixed is not None:
            y2, lam = mixed
            loss = lam * loss + (1 - lam) * objective(logprobs, y2, smoothing)
    loop.optimizer.zero_grad(set_to_none=True)
    if loop.scaler is not None:
        loop.scaler.scale(loss).backward()
        loop.scaler.step(loop.optimizer)
        loop.scaler.update()
    else:
        loss.backward()
        loop.optimizer.step()
    if loop.scheduler is not None:
        loop.scheduler.step()
    return logprobs.detach()


def train_epoch(model: Classifier, loop: Loop, split: Split, order: torch.Tensor, epoch: int) -> EpochStats:
    """One pass over ``split`` (its labels, and its images unless streamed, already on the device) in
    ``order``, this process's share. The running loss and accuracy stay on the device until the epoch ends:
    no host synchronisation per step."""
    model.train()
    recipe, device = loop.recipe, loop.device
    order = order.to(split.labels.device)
    total_nll = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    batches = [order[start:end] for start, end in batch_bounds(len(order), recipe.batch_size // recipe.world_size)]
    pixels = batch_pixels(split, batches, device, recipe.world_size)
    shown = {"desc": f"epoch {epoch}/{loop.epochs}", "leave": False, "unit": "batch", "mininterval": 0.5}
    bar = tqdm(zip(batches, pixels, strict=True), total=len(batches), disable=None, **shown)  # None: a TTY only
    for idx, batch in bar:
        x = batch.float().div_(255.0)
        y = split.labels[idx]
        mixed = None
        if recipe.train.augment:
            x = augment(x, loop.gen, recipe.train)
            x, y2, lam = mix(x, y, loop.gen, recipe.train)
            mixed = (y2, lam) if lam < 1 else None
        logprobs = step(loop, x, y, mixed)
        # The curve reports plain NLL (comparable with val), whatever the objective's label smoothing.
        total_nll += F.nll_loss(logprobs.float(), y, reduction="sum")
        correct += (logprobs.argmax(1) == y).sum()
    nll, right, seen = distributed.all_sum([total_nll.item(), float(correct), float(len(order))], device)
    if not math.isfinite(nll):
        raise UserError(f"training diverged at epoch {epoch} (loss is {nll}); lower lr in params.yaml")
    return EpochStats(nll / seen, right / seen)


def score_val(model: Classifier, val: Split, loop: Loop) -> EpochStats:
    """Val loss and accuracy, exact. Each process scores its shard (one process: all of val) and the sums are
    all-reduced, so every image counts once (no sampler padding) and every rank gets the same figures."""
    distributed.sync_buffers(model.net)
    part = distributed.shard(len(val), loop.world)
    images, labels = view(val.images, part), val.labels[part]  # a streamed val is decoded batch by batch
    logprobs = checkpoint.score(model, images, VAL_BATCH, loop.device, loop.precision)
    nll = F.nll_loss(logprobs, labels, reduction="sum").item() if len(labels) else 0.0
    right = int((logprobs.argmax(1) == labels).sum()) if len(labels) else 0
    total_nll, total_right, n = distributed.all_sum([nll, float(right), float(len(labels))], loop.device)
    return EpochStats(total_nll / n, total_right / n)


def epoch_order(loop: Loop, n: int, epoch: int) -> torch.Tensor:
    """This process's sample order for ``epoch``."""
    if loop.world.distributed:
        return distributed.epoch_order(n, epoch, loop.recipe.seed, loop.world)
    return torch.randperm(n, generator=loop.gen)


# -------------------------------------------------------------------------------------------- the record


@dataclass
class Record:
    """Where a run writes as it goes: the best epoch's checkpoint, the curves and the resume file."""

    best_path: Path
    meta: dict[str, Any]  # what every checkpoint holds besides the weights (build_model)
    live: Any = None  # DVCLive's Live, on rank 0; None: no curves
    resume_file: resume.Resume | None = None  # None: nothing saved for resuming

    def curve(self, epoch: int, tr: EpochStats, va: EpochStats) -> None:
        if self.live is None:
            return
        self.live.step = epoch  # plots count epochs from 1, as the log does
        for split_name, stats in (("train", tr), ("val", va)):
            self.live.log_metric(f"{split_name}/loss", round(stats.loss, 6))
            self.live.log_metric(f"{split_name}/accuracy", round(stats.accuracy, 6))
        self.live.next_step()

    def restore(self, model: Classifier, loop: Loop) -> resume.Progress:
        """The progress of an interrupted run of the same params, data, code and machine, restored into
        ``model`` and ``loop`` with its curves and best checkpoint rewritten (DVC deleted them with the
        stage's outputs); a fresh start otherwise."""
        if self.resume_file is None:
            return resume.Progress()
        progress = self.resume_file.restore(model, loop.optimizer, loop.scheduler, loop.gen, loop.device)
        for epoch, tr_row, va_row in progress.history:
            self.curve(epoch, EpochStats(*tr_row), EpochStats(*va_row))
        if progress.best_checkpoint and loop.world.main:
            checkpoint.save(self.best_path, progress.best_checkpoint)
        if progress.epoch:
            loop.world.say(
                f"train: resuming from {self.resume_file.path} after epoch {progress.epoch} of {loop.epochs}"
            )
        return progress

    def epoch(
        self,
        model: Classifier,
        loop: Loop,
        progress: resume.Progress,
        epoch: int,
        stats: tuple[EpochStats, EpochStats],
        seconds: float,
    ) -> None:
        """Log ``epoch`` (its train and val ``stats``), keep it if it is the best so far, and count it done in
        ``progress`` (saved for resuming): a Ctrl-C before that leaves it out of what was saved."""
        tr, va = stats
        figures = f"train loss {tr.loss:.4f} acc {tr.accuracy:.4f}  val loss {va.loss:.4f} acc {va.accuracy:.4f}"
        loop.world.say(f"epoch {epoch:3d}/{loop.epochs}  {figures}")
        self.curve(epoch, tr, va)
        progress.history.append([epoch, [tr.loss, tr.accuracy], [va.loss, va.accuracy]])
        if (va.accuracy, -va.loss) > (progress.best.accuracy, -progress.best.loss):
            progress.best = resume.Best(va.accuracy, va.loss, epoch)
            progress.since_best = 0
            progress.best_checkpoint = {"state_dict": checkpoint.cpu_state(model), "epoch": epoch, **self.meta}
            if loop.world.main:
                checkpoint.save(self.best_path, progress.best_checkpoint)
        else:
            progress.since_best += 1
        progress.epoch, progress.seconds = epoch, seconds
        if self.resume_file is not None:
            self.resume_file.save(progress, model, loop.optimizer, loop.scheduler, loop.gen, loop.device)


# ------------------------------------------------------------------------------------------------------- fit


def fit(
    recipe: RecipeParams,
    classes: list[str],
    train: Split,
    val: Split,
    *,
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
    recipe, adapted = adapt.resolve(recipe, len(train), len(classes))
    if adapted:
        world.say(adapt.describe(adapted, recipe, len(train), len(classes)))
    if world.size != recipe.world_size:
        asked = f"{world.size} processes run, but params.yaml asks for {recipe.world_size} (nproc x dist.nnodes)"
        raise UserError(f"{asked}; run the train stage through dvc repro, which launches them")
    device = resolve_device(recipe.train.device, world.local_rank if world.distributed else None)
    precision = resolve_precision(recipe.train.precision, device)
    seed_everything(recipe.seed, device, recipe.train.deterministic, compiled=recipe.train.compile)
    configure_math(device, recipe.train.tf32)
    distributed.setup(world, device)
    try:
        model, meta = build_model(recipe, classes, train, world, device)
        loop = make_loop(recipe, model, len(train), world, device, precision)
        saved = None
        if resume_path is not None:
            saved = resume.Resume(resume_path, resume.signature(recipe, classes, train, val, device, precision))
        record = Record(best_path, meta, live, saved)
        progress = run_epochs(model, loop, train, val, record)
        del model, loop, record  # the DDP reducer goes with the group it holds, not at interpreter exit
        distributed.finish()
    finally:
        distributed.teardown()
    return summary(progress, adapted, world.size, len(train), fingerprint(device, precision))


def summary(
    progress: resume.Progress, adapted: dict[str, Any], world_size: int, images: int, machine: dict[str, Any]
) -> dict[str, Any]:
    """What a finished run reports: quality (DVC metrics), the best epoch's figures, the runtime and the
    fingerprint of the ``machine`` that ran it (``images``: the training set's size)."""
    best = progress.best
    return {
        "quality": {  # DVC metrics: the headline only; what each auto knob became is in the checkpoint's params
            "best_epoch": best.epoch,
            "epochs_run": progress.epoch,
            **({"regularisation_strength": adapted["strength"]} if adapted else {}),
        },
        "adapted": adapted,
        "best": {"accuracy": best.accuracy, "loss": best.loss},
        "runtime": {
            "train_seconds": round(progress.seconds, 3),
            "train_images_per_s": round(progress.epoch * images / progress.seconds, 1),
            "world_size": world_size,
            **machine_names(machine),
        },
        "fingerprint": machine,
    }


def run_epochs(model: Classifier, loop: Loop, train: Split, val: Split, record: Record) -> resume.Progress:
    """Epochs until the planned number or early stopping, from where ``record`` says the run stands."""
    patience, freeze = loop.recipe.train.patience, loop.recipe.train.freeze_epochs
    # In memory, the whole uint8 training set moves to the device once (14 MB for SIGNS at 64 px) and batches
    # are indexed there; streamed, DataLoader workers decode each batch.
    on_device = dataclasses.replace(train, labels=train.labels.to(loop.device))
    if not isinstance(train.images, StreamedImages):
        on_device.images = train.images.to(loop.device)
    progress = record.restore(model, loop)
    before, started = progress.seconds, time.perf_counter()
    try:
        for epoch in range(progress.epoch + 1, loop.epochs + 1):
            if patience and progress.since_best >= patience:
                break  # a resumed run that had already stopped early
            if freeze:
                freeze_backbone(model, loop.world, frozen=epoch <= freeze, epoch=epoch)
            tr = train_epoch(model, loop, on_device, epoch_order(loop, len(train), epoch), epoch)
            va = score_val(model, val, loop)
            record.epoch(model, loop, progress, epoch, (tr, va), seconds=before + time.perf_counter() - started)
            if patience and progress.since_best >= patience:
                loop.world.say(f"early stop: no better val result for {patience} epochs")
                break
    except torch.OutOfMemoryError:
        size = loop.recipe.batch_size
        out = f"out of {loop.device.type.upper()} memory training with batch_size {size}"
        raise UserError(f"{out}; try a smaller batch: dvc exp run -S batch_size={max(1, size // 2)}") from None
    except KeyboardInterrupt:
        done, saved = progress.epoch, "no complete epoch was saved"
        if record.resume_file is not None and done:
            saved = f"epochs 1-{done} are saved in {record.resume_file.path}: run `dvc repro` again to resume"
        raise KeyboardInterrupt(f"training stopped in epoch {done + 1} of {loop.epochs}; {saved}") from None
    if record.resume_file is not None:
        record.resume_file.finish()
    progress.seconds = before + time.perf_counter() - started
    return progress
