"""The recipe that adapts to the data (handsigns.adapt): ``auto`` knobs decided from the training set's size."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
import yaml

from handsigns import adapt, params
from handsigns.adapt import plan_epochs
from handsigns.errors import UserError
from handsigns.params import AUTO, build
from handsigns.params.recipe import RecipeParams
from handsigns.train import fit

from conftest import TINY, random_split


def recipe_for(**train) -> RecipeParams:
    return build(RecipeParams, {"epochs": 20, "batch_size": 32, "train": {"min_steps": 500, **train}})


def test_strength_grows_with_how_far_the_step_budget_raises_the_epochs():
    recipe = recipe_for()
    # 800 images: 25 steps an epoch, 20 epochs reach 500 steps; 80: 3 steps, 167 epochs (8.4x); 40: 250 (12.5x)
    assert [adapt.raised_epochs(recipe, n)[0] for n in (800, 500, 200, 80, 40)] == [20, 32, 72, 167, 250]
    s = [adapt.strength(recipe, n) for n in (800, 500, 200, 80, 40)]
    # 500 images: 1.6x, under the onset (2x): the recipe as tuned; then a log scale to 1 at 10x
    assert s[0] == s[1] == 0.0 and s[-1] == 1.0 and 0 < s[2] < s[3] < 1
    assert s[3] == pytest.approx(math.log(167 / 20 / 2) / math.log(10 / 2))
    assert adapt.strength(recipe_for(min_steps=0), 40) == 0.0  # no step budget: nothing raised


def test_regularised_runs_get_more_steps_and_a_pinned_factor_is_kept():
    recipe = recipe_for()
    factors = [adapt.value("train.steps_factor", adapt.strength(recipe, n)) for n in (800, 500, 200, 80, 40)]
    assert factors[:2] == [1.0, 1.0] and factors[-1] == 4.0  # the recipe as tuned keeps its epochs
    # 200 images: 72 epochs x 2.096 = 150.9; 80: 167 x 3.664 = 611.9; 40: 250 x 4
    assert [plan_epochs(recipe, n)[0] for n in (800, 500, 200, 80, 40)] == [20, 32, 151, 612, 1000]
    assert plan_epochs(recipe_for(steps_factor=1.5), 80)[0] == math.ceil(167 * 1.5)  # a number pins it
    assert plan_epochs(recipe_for(steps_factor=1.1), 800)[0] == 22  # not 23: 20 x 1.1 is 22.000000000000004
    resolved, decided = adapt.resolve(recipe, 80, classes=6)
    assert plan_epochs(resolved, 80) == plan_epochs(recipe, 80)  # the same plan before and after resolving
    assert decided["train.steps_factor"] == factors[3]


def test_every_knob_moves_between_its_two_values():
    for knob, (lo, hi) in adapt.RANGES.items():
        assert adapt.value(knob, 0.0) == pytest.approx(lo, rel=1e-3)
        assert adapt.value(knob, 1.0) == pytest.approx(hi, rel=1e-3)
        assert min(lo, hi) < adapt.value(knob, 0.5) < max(lo, hi)


def test_auto_knobs_are_decided_and_pinned_ones_kept():
    raw = {"epochs": 2, "train": {"weight_decay": 0.01, "min_steps": 500}}  # the rest: their defaults, auto
    recipe = build(RecipeParams, raw)
    resolved, decided = adapt.resolve(recipe, train_images=60, classes=6)  # 2 steps an epoch: 250 epochs, not 2
    strong = {knob: hi for knob, (_, hi) in adapt.RANGES.items() if knob != "train.weight_decay"}
    assert decided == {"strength": 1.0, "model.num_channels": 16, **strong}
    assert resolved.model.dropout == 0.5 and resolved.train.erase == adapt.RANGES["train.erase"][1]
    assert resolved.train.weight_decay == 0.01  # a number in params.yaml is never changed
    assert adapt.resolve(resolved, 60, classes=6) == (resolved, {})  # nothing auto: nothing decided
    plenty, decided = adapt.resolve(recipe, train_images=16_000, classes=6)  # 500 steps an epoch: 2, as asked
    assert decided["strength"] == 0.0 and plenty.train.erase == 0.0 and plenty.model.dropout == 0.3


def test_auto_is_refused_where_it_means_nothing(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"lr": AUTO}))
    with pytest.raises(UserError, match="lr = 'auto' is a str; expected a float"):
        params.load(RecipeParams, path)
    path.write_text(yaml.safe_dump({"train": {"erase": "lots"}}))
    with pytest.raises(UserError, match=r"train\.erase = 'lots' is not allowed; use a number or auto"):
        params.load(RecipeParams, path)
    path.write_text(yaml.safe_dump({"train": {"erase": 2}}))
    with pytest.raises(UserError, match=r"train\.erase = 2\.0 is out of range"):
        params.load(RecipeParams, path)


def test_the_knobs_that_may_be_auto_are_those_adapt_decides():
    recipe = RecipeParams()
    may = {
        f"{name}.{f.name}"
        for name in ("model", "train")
        for f in dataclasses.fields(getattr(recipe, name))
        if f.metadata.get("auto")
    }
    assert may == {*adapt.RANGES, adapt.WIDTH}  # the width: by the classes, not the strength
    params.load(RecipeParams, Path(__file__).resolve().parents[1] / "params.yaml")  # as shipped: loads


@pytest.mark.parametrize(("classes", "channels"), [(2, 16), (6, 16), (10, 16), (11, 32), (26, 32)])
def test_the_width_is_decided_by_the_classes(classes, channels):
    """Half the notes' width up to 10 classes; the notes' 32 channels above (26 letters lost 0.11 at 16)."""
    resolved, decided = adapt.resolve(RecipeParams(), train_images=800, classes=classes)
    assert resolved.model.num_channels == decided["model.num_channels"] == channels
    pinned = build(RecipeParams, {"model": {"num_channels": 24}})
    assert adapt.resolve(pinned, 800, classes)[0].model.num_channels == 24  # a number pins it
    assert adapt.at(RecipeParams(), 0.0)[0].model.num_channels == AUTO  # no classes given: left to decide


def test_a_fit_says_and_records_what_it_decided(tmp_path, capsys):
    train = {**TINY["train"], "erase": AUTO, "min_steps": 10}  # 12 images, batch 16: 1 step, 10 epochs, not 1
    recipe = build(RecipeParams, {**TINY, "epochs": 1, "train": train})
    summary = fit(recipe, ["a", "b"], random_split(12), random_split(4, seed=1), best_path=tmp_path / "best.pt")
    adapted = summary["adapted"]
    assert adapted == {"strength": 1.0, "train.erase": adapt.RANGES["train.erase"][1]}
    assert summary["quality"]["regularisation_strength"] == 1.0  # metrics/train.json's figure
    said = capsys.readouterr().out
    assert "train: 12 images, 10 epochs for train.min_steps (10.0x the 1 asked): regularisation strength 1.00" in said
    assert "; 10 epochs in all" in said  # TINY pins train.steps_factor at 1
    stored = torch.load(tmp_path / "best.pt", weights_only=True)
    assert stored["params"]["train"]["erase"] == adapted["train.erase"]  # the checkpoint holds the number used
