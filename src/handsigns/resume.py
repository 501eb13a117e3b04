"""Resuming an interrupted training run from its last complete epoch, to the bytes an uninterrupted run gives.

After every epoch the train stage saves everything the next epoch reads (the weights, the optimiser and
schedule, every rank's random streams, the best epoch so far and the curves) with a :func:`signature` of
what the run is: :meth:`Resume.save`. A later run's :meth:`Resume.restore` reads it only when that
signature matches, and a completed run's :meth:`Resume.finish` deletes it. A kill at any moment, even inside
a save, loses at most one epoch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from handsigns import checkpoint, distributed
from handsigns.dataset import Split
from handsigns.files import leftovers
from handsigns.fingerprint import DECIDING_KEYS, fingerprint
from handsigns.model import Classifier
from handsigns.params.recipe import RecipeParams


@dataclass
class Best:
    """The best epoch so far: its val accuracy and loss, and which epoch it was (0: none yet)."""

    accuracy: float = -1.0
    loss: float = math.inf
    epoch: int = 0


@dataclass
class Progress:
    """Where a run stands after its last complete epoch: what a resume file holds besides the live state."""

    epoch: int = 0  # epochs complete
    best: Best = field(default_factory=Best)
    best_checkpoint: dict[str, Any] = field(default_factory=dict)  # what models/best.pt holds
    since_best: int = 0  # epochs since the best one (early stopping)
    history: list[Any] = field(default_factory=list)  # [epoch, [train loss, acc], [val loss, acc]] per epoch
    seconds: float = 0.0  # training time of the epochs done before this process started


PROGRESS = tuple(f.name for f in dataclasses.fields(Progress))
LIVE = ("net", "rng", "optimizer", "scheduler")  # the state the next epoch computes with


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


def _read(path: Path, expected: dict) -> dict | None:
    """The resume state saved at ``path``, or None (and one line saying why) when it is missing, unreadable, or
    was saved by a run with other params, data, code or machine."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        saved = state["signature"]
        missing = [key for key in (*PROGRESS, *LIVE) if key not in state]
        if missing:  # a file of an older layout is as foreign as a damaged one
            raise KeyError(missing[0])
        state["best"] = Best(**state["best"])
    except Exception as exc:  # a damaged or foreign file: never fatal, never trusted
        print(f"train: not resuming from {path}: unreadable ({type(exc).__name__}); starting over", flush=True)
        return None
    differ = [part for part in expected if saved.get(part) != expected[part]]
    if differ:
        print(f"train: not resuming from {path}: it was saved with other {', '.join(differ)}; starting over")
        return None
    return state


def _rng(gen: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    """This rank's random streams: its augmentation generator, torch's CPU stream (dropout) and CUDA's."""
    cuda = {"cuda": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {}
    return {"generator": gen.get_state(), "torch": torch.get_rng_state(), **cuda}


@dataclass(frozen=True)
class Resume:
    """A run's resume file at ``path``, trusted only by a run of the same ``signature``."""

    path: Path
    signature: dict

    def restore(self, model: Classifier, optimizer, scheduler, gen: torch.Generator, device) -> Progress:
        """Load the run saved at :attr:`path` into ``model``, ``optimizer``, ``scheduler`` and the random streams,
        when it is this run (:attr:`signature`); its progress, or a fresh one. Rank 0 reads and judges the file
        and hands it to the others: no file system is shared across nodes."""
        world = distributed.current()
        state = distributed.broadcast(_read(self.path, self.signature) if world.main else None)
        if state is None:
            return Progress()
        model.net.load_state_dict(state["net"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        rng = state["rng"][world.rank]  # each rank its own streams
        gen.set_state(rng["generator"])
        torch.set_rng_state(rng["torch"])
        if device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], device)
        return Progress(**{key: state[key] for key in PROGRESS})

    def save(self, progress: Progress, model: Classifier, optimizer, scheduler, gen: torch.Generator, device) -> None:
        """Save the run after ``progress.epoch``: every rank's random streams gathered, rank 0 writing
        (atomically: a kill mid-write leaves the previous epoch's file)."""
        rngs = distributed.all_gather(_rng(gen, device))
        if not distributed.current().main:
            return
        state = {
            "signature": self.signature,
            # not asdict(progress): it would deep-copy the weights; Best as a plain dict, which weights_only reads
            **{key: getattr(progress, key) for key in PROGRESS} | {"best": dataclasses.asdict(progress.best)},
            "net": checkpoint.cpu_state(model),
            "rng": rngs,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler else {},
        }
        checkpoint.save(self.path, state)

    def finish(self) -> None:
        """A completed run leaves nothing to resume, nor an empty folder (rank 0 deletes)."""
        if not distributed.current().main:
            return
        self.path.unlink(missing_ok=True)
        for stray in leftovers(self.path):  # a checkpoint write a kill cut short
            stray.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.path.parent.rmdir()
