"""A recipe that adapts to the data it is given, as the step budget (``train.min_steps``) already does.

A few dozen images per class overfit a recipe chosen on hundreds: the train stage decides every knob set to
``auto`` in params.yaml from the training set's size, regularising and augmenting more as it shrinks. A number
in params.yaml pins a knob; ``auto`` knobs are printed by the train stage and recorded in the run
(``metrics/train.json``, and the checkpoint's recipe holds the numbers used).

Strength grows with the log of how few images each class has: 0 at :data:`FULL` images per class or more,
1 at :data:`FEW` or fewer. Each knob moves from its value at strength 0 to its value at strength 1 (weight
decay on a log scale). What each knob bought, measured over sets and seeds: docs/generality.md.
"""

from __future__ import annotations

import dataclasses
import math

from handsigns.params import AUTO
from handsigns.params.recipe import RecipeParams

FULL, FEW = 1000, 10  # images per class at strength 0 and 1

# knob: (value at strength 0, value at strength 1)
RANGES: dict[str, tuple[float, float]] = {
    "model.dropout": (0.3, 0.5),
    "train.weight_decay": (5e-4, 0.05),
    "train.max_rotation": (10.0, 20.0),
    "train.min_scale": (0.9, 0.75),
    "train.max_shift": (0.05, 0.1),
    "train.erase": (0.0, 0.5),
}
_LOG_SCALE = {"train.weight_decay"}


def strength(train_images: int, classes: int) -> float:
    """0 to 1: how much a training set of ``train_images`` in ``classes`` classes needs regularising."""
    per_class = max(train_images / max(classes, 1), 1)
    return min(max(math.log(FULL / per_class) / math.log(FULL / FEW), 0.0), 1.0)


def value(knob: str, s: float) -> float:
    """``knob``'s value at strength ``s`` (rounded to 4 significant digits: readable in the log and the card)."""
    lo, hi = RANGES[knob]
    v = lo * (hi / lo) ** s if knob in _LOG_SCALE else lo + s * (hi - lo)
    return float(f"{v:.4g}")


def resolve(recipe: RecipeParams, train_images: int, classes: int) -> tuple[RecipeParams, dict[str, float]]:
    """``recipe`` with every ``auto`` knob decided for the training set, and what was decided (knob: value,
    with ``strength``); nothing decided when no knob is ``auto``."""
    s = strength(train_images, classes)
    decided: dict[str, float] = {}
    sections = {}
    for name in ("model", "train"):
        section = getattr(recipe, name)
        changes = {}
        for f in dataclasses.fields(section):
            if f.metadata.get("auto") and getattr(section, f.name) == AUTO:  # (device: auto is another auto)
                changes[f.name] = decided[f"{name}.{f.name}"] = value(f"{name}.{f.name}", s)
        sections[name] = dataclasses.replace(section, **changes)
    if not decided:
        return recipe, {}
    return dataclasses.replace(recipe, **sections), {"strength": round(s, 4), **decided}


def describe(decided: dict[str, float], train_images: int, classes: int) -> str:
    """The train stage's line saying what was decided."""
    knobs = ", ".join(f"{k} {v:g}" for k, v in decided.items() if k != "strength")
    return (
        f"train: {train_images} training images in {classes} classes: regularisation strength "
        f"{decided['strength']:.2f} (0 at {FULL}+ per class, 1 at {FEW}): {knobs} (auto in params.yaml; "
        "set a number to pin one)"
    )
