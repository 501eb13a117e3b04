"""A recipe that adapts to the data it is given, as the step budget (``train.min_steps``) already does.

The step budget gives a small training set as many optimiser steps as a large one, so each of its images is
seen many more times: 20 passes over SIGNS' 800 images, 195 over 80 of them. Seen that often, a few dozen
images per class are learnt by heart (train accuracy 1.0, val stalled and its loss rising). So every knob set
to ``auto`` in params.yaml (but the width, :func:`width`, which the classes decide) is decided by the train
stage from how far the step budget raised the epochs:
strength 0 when it raised them less than :data:`ONSET_RAISE`-fold (the recipe as tuned), 1 when it raised them
:data:`FULL_RAISE`-fold or more, on a log scale between. Each knob moves from its value at strength 0 to its
value at strength 1 (weight decay on a log scale). A number in params.yaml pins a knob; what the ``auto`` knobs
became is printed by the train stage and recorded in the run (the strength in ``metrics/train.json``, the
values in the checkpoint's params and so the model card).

Why passes and not images per class: 572 images of 26 letters (22 a class) get 28 passes, and the full
strength, chosen on 80 SIGNS images (195 passes), made them underfit (test 0.12 against 0.74); the step budget
is what makes a small set overfit. And even a little of it (strength 0.15 at 28 passes) cost the letters 0.11
(0.846 -> 0.735 over seeds 0-2) while nothing measured below 2x overfits: hence the onset.

Regularised that strongly, a network learns slower: on SIGNS at 10 % (strength 0.89) the best val epoch was
134 of 167 on average, and twice the steps gave test 0.872 against 0.847 (seeds 0-2). So the epochs grow with
the strength too (``train.steps_factor``: 1 at strength 0, 4 at 1): the sets the recipe was tuned on keep their
epochs, and only the small sets train longer (SIGNS at 10 %: 612 epochs, 0.847 -> 0.878; 1,281 s on one thread
against 367 s). What each knob bought, over sets and seeds: docs/generality.md.
"""

from __future__ import annotations

import dataclasses
import math

from handsigns.dataset import batch_bounds
from handsigns.params import AUTO
from handsigns.params.recipe import RecipeParams

ONSET_RAISE = 2  # the step budget raising the epochs less than this many times over: strength 0
FULL_RAISE = 10  # this many times over or more: strength 1

# Each auto knob's value at strength 0 (the recipe as tuned on SIGNS, whose epochs the step budget does not
# raise) and at strength 1, chosen on SIGNS at 10 % (80 images, 195 passes): test 0.82 -> 0.86 on seed 0
# (docs/generality.md).
RANGES: dict[str, tuple[float, float]] = {
    "model.dropout": (0.3, 0.5),
    "train.weight_decay": (5e-4, 0.05),
    "train.max_rotation": (10.0, 20.0),
    "train.min_scale": (0.9, 0.75),
    "train.max_shift": (0.05, 0.1),
    "train.erase": (0.0, 0.25),
    "train.steps_factor": (1.0, 4.0),
}
_LOG_SCALE = {"train.weight_decay"}

# model.num_channels is decided by the number of classes, not the strength: the notes' Net at half their width
# (16, 32, 64 channels) trains 2.65x the images/s of their 32, 64, 128 and kept its accuracy within seed noise on
# every set of 6 or 10 classes measured (SIGNS 0.986 -> 0.992 over seeds 0-2); 26 letters lost 0.11 at 16
# (docs/speed.md, docs/generality.md). So: 16 up to NARROW_UP_TO classes, the notes' 32 above.
WIDTH = "model.num_channels"
NARROW_UP_TO = 10
NARROW, WIDE = 16, 32


def width(classes: int) -> int:
    """``model.num_channels`` for ``classes`` classes when it is ``auto``."""
    return NARROW if classes <= NARROW_UP_TO else WIDE


def raised_epochs(recipe: RecipeParams, train_images: int) -> tuple[int, int]:
    """(epochs, optimiser steps per epoch): ``epochs``, raised where the data set is so small that they would
    take fewer than ``train.min_steps`` steps, so a small data set gets as many updates as a large one."""
    world = recipe.world_size  # each process takes an equal share (the sampler pads) in batches of its share
    steps = len(batch_bounds(math.ceil(train_images / world), recipe.batch_size // world))
    return max(recipe.epochs, math.ceil(recipe.train.min_steps / steps)), steps


def plan_epochs(recipe: RecipeParams, train_images: int) -> tuple[int, int]:
    """(epochs, optimiser steps per epoch) of the run: :func:`raised_epochs` times ``train.steps_factor`` (its
    ``auto`` decided here too, so the plan is the same before and after :func:`resolve`)."""
    epochs, steps = raised_epochs(recipe, train_images)
    factor = recipe.train.steps_factor
    if isinstance(factor, str):  # auto: the one string allowed
        factor = value("train.steps_factor", strength(recipe, train_images))
    return math.ceil(round(epochs * factor, 6)), steps  # round: 20 x 1.1 is 22.000000000000004 in floats


def strength(recipe: RecipeParams, train_images: int) -> float:
    """0 to 1: how much the step budget raises ``recipe.epochs`` for ``train_images`` (:func:`raised_epochs`)."""
    epochs, _ = raised_epochs(recipe, train_images)
    raised = math.log(epochs / recipe.epochs / ONSET_RAISE) / math.log(FULL_RAISE / ONSET_RAISE)
    return min(max(raised, 0.0), 1.0)


def value(knob: str, s: float) -> float:
    """``knob``'s value at strength ``s`` (rounded to 4 significant digits: readable in the log and the card)."""
    lo, hi = RANGES[knob]
    v = lo * (hi / lo) ** s if knob in _LOG_SCALE else lo + s * (hi - lo)
    return float(f"{v:.4g}")


def resolve(recipe: RecipeParams, train_images: int, classes: int) -> tuple[RecipeParams, dict[str, float]]:
    """``recipe`` with every ``auto`` knob decided for a training set of ``train_images`` images of ``classes``
    classes, and what was decided (knob: value, with ``strength``); nothing decided when no knob is ``auto``."""
    return at(recipe, strength(recipe, train_images), classes)


def at(recipe: RecipeParams, s: float, classes: int | None = None) -> tuple[RecipeParams, dict[str, float]]:
    """``recipe`` with every ``auto`` knob at strength ``s`` and, given ``classes``, the width decided for them;
    what was decided (:func:`resolve`)."""
    decided: dict[str, float] = {}
    sections = {}
    for name in ("model", "train"):
        section = getattr(recipe, name)
        changes: dict[str, float] = {}
        for f in dataclasses.fields(section):
            key = f"{name}.{f.name}"
            if not f.metadata.get("auto") or getattr(section, f.name) != AUTO:  # (device: auto is another auto)
                continue
            if key == WIDTH:
                if classes is not None:
                    changes[f.name] = decided[key] = width(classes)
            else:
                changes[f.name] = decided[key] = value(key, s)
        sections[name] = dataclasses.replace(section, **changes)
    if not decided:
        return recipe, {}
    return dataclasses.replace(recipe, **sections), {"strength": round(s, 4), **decided}


def describe(decided: dict[str, float], recipe: RecipeParams, train_images: int, classes: int) -> str:
    """The train stage's line saying what was decided."""
    raised, _ = raised_epochs(recipe, train_images)
    epochs, _ = plan_epochs(recipe, train_images)
    knobs = ", ".join(f"{k} {v:g}" for k, v in decided.items() if k not in ("strength", WIDTH))
    wide = f"{NARROW} up to {NARROW_UP_TO} classes, {WIDE} above"
    net = f"{classes} classes: {WIDTH} {decided[WIDTH]} ({wide}); " if WIDTH in decided else ""
    return (
        f"train: {net}{train_images} images, {raised} epochs for train.min_steps ({raised / recipe.epochs:.1f}x the "
        f"{recipe.epochs} asked): regularisation strength {decided['strength']:.2f} (0 below {ONSET_RAISE}x, 1 at "
        f"{FULL_RAISE}x): {knobs}; {epochs} epochs in all (auto in params.yaml; a number pins one)"
    )
