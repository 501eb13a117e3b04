"""The recipe that adapts to the data (handsigns.adapt): ``auto`` knobs decided from the training set's size."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml

from handsigns import adapt, params
from handsigns.errors import UserError
from handsigns.params import AUTO, build
from handsigns.params.recipe import RecipeParams
from handsigns.train import fit

from conftest import TINY, random_split


def test_strength_falls_from_one_to_zero_as_classes_fill():
    per_class = [1, adapt.FEW, 30, 100, adapt.FULL, 10 * adapt.FULL]
    s = [adapt.strength(n * 6, 6) for n in per_class]
    assert s[0] == s[1] == 1.0 and s[-2] == s[-1] == 0.0
    assert s == sorted(s, reverse=True) and 0 < s[3] < s[2] < 1


def test_every_knob_moves_from_its_value_at_zero_to_its_value_at_one():
    for knob, (lo, hi) in adapt.STRONG.items():
        assert adapt.value(knob, 0.0) == pytest.approx(lo, rel=1e-3)
        assert adapt.value(knob, 1.0) == pytest.approx(hi, rel=1e-3)
        mid = adapt.value(knob, 0.5)
        assert min(lo, hi) < mid < max(lo, hi)


def test_auto_knobs_are_decided_and_pinned_ones_kept():
    recipe = build(RecipeParams, {"model": {"dropout": AUTO}, "train": {"erase": AUTO, "weight_decay": 0.01}})
    resolved, decided = adapt.resolve(recipe, train_images=60, classes=6)  # 10 a class: full strength
    assert decided == {
        "strength": 1.0,
        "model.dropout": adapt.STRONG["model.dropout"][1],
        "train.erase": adapt.STRONG["train.erase"][1],
    }
    assert resolved.model.dropout == decided["model.dropout"] and resolved.train.erase == decided["train.erase"]
    assert resolved.train.weight_decay == 0.01  # a number in params.yaml is never changed
    assert adapt.resolve(resolved, 60, 6) == (resolved, {})  # nothing auto: nothing decided


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
    assert may == set(adapt.STRONG)
    params.load(RecipeParams, Path(__file__).resolve().parents[1] / "params.yaml")  # as shipped: loads


def test_a_fit_says_and_records_what_it_decided(tmp_path, capsys):
    recipe = build(RecipeParams, {**TINY, "epochs": 2, "train": {**TINY["train"], "erase": AUTO}})
    summary = fit(recipe, ["a", "b"], random_split(12), random_split(4, seed=1), best_path=tmp_path / "best.pt")
    adapted = summary["quality"]["adapted"]
    assert adapted == {"strength": 1.0, "train.erase": adapt.STRONG["train.erase"][1]}
    assert "train: 12 training images in 2 classes: regularisation strength 1.00" in capsys.readouterr().out
    stored = torch.load(tmp_path / "best.pt", weights_only=True)
    assert stored["params"]["train"]["erase"] == adapted["train.erase"]  # the checkpoint holds the number used
