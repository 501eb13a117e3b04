"""The streaming data path (DataLoader workers decoding batch by batch) gives the bytes the in-memory path gives:
in process, and through the real pipeline with a tiny memory.budget_gb."""

from __future__ import annotations

import json

import pytest
import torch

from handsigns.dataset import StreamedImages, channel_stats, load_split, read_classes
from handsigns.params import build
from handsigns.params.data import DataParams
from handsigns.params.recipe import RecipeParams
from handsigns.split import build_index, write_index
from handsigns.train import fit

from conftest import TINY, colour_dataset, dvc, make_project


@pytest.fixture
def indexed(tmp_path):
    raw = colour_dataset(tmp_path / "raw", per_class=24, size=20)
    index = tmp_path / "index"
    write_index(build_index(raw, DataParams(source="x")), index, tmp_path / "d.json", tmp_path / "details.json")
    return raw, index


def splits(indexed, stream: bool):
    raw, index = indexed
    classes = read_classes(index)
    return classes, [load_split(s, 16, classes, index, raw, stream=stream) for s in ("train", "val")]


def test_streamed_images_decode_what_the_in_memory_tensor_holds(indexed):
    _, (memory, _) = splits(indexed, stream=False)
    _, (streamed, _) = splits(indexed, stream=True)
    assert isinstance(streamed.images, StreamedImages) and len(streamed.images) == len(memory.images)
    assert torch.equal(streamed.images[3], memory.images[3])
    assert torch.equal(streamed.images[2:9:3], memory.images[2:9:3])
    idx = torch.tensor([5, 0, 7])
    assert torch.equal(streamed.images[idx], memory.images[idx])
    assert channel_stats(streamed.images) == channel_stats(memory.images)


def test_a_streamed_run_gives_the_bytes_of_an_in_memory_run(indexed, tmp_path):
    recipe = build(RecipeParams, {**TINY, "epochs": 3, "batch_size": 8})
    results = {}
    for stream in (False, True):
        classes, (train, val) = splits(indexed, stream)
        best = tmp_path / f"best_{stream}.pt"
        summary = fit(recipe, classes, train, val, best_path=best)
        results[stream] = (summary["quality"], summary["best"], best.read_bytes())
    assert results[True] == results[False]


@pytest.mark.slow
def test_the_pipeline_over_a_tiny_memory_budget_streams_and_gives_the_same_metrics(tmp_path):
    source = colour_dataset(tmp_path / "source", per_class=30, size=24)
    overrides = {**TINY, "epochs": 3}
    memory = make_project(tmp_path / "memory", {"source": str(source)}, overrides=overrides, git=True)
    tiny_budget = {**overrides, "memory": {"budget_gb": 1e-6}}
    streamed = make_project(tmp_path / "streamed", {"source": str(source)}, overrides=tiny_budget, git=True)
    dvc(memory, "repro")
    out = dvc(streamed, "repro").stdout
    for stage in ("train", "evaluate", "export"):
        assert f"{stage}: " in out and "over memory.budget_gb = 1e-06: streaming batches from data/raw/" in out
    same = ("metrics/eval.json", "metrics/train.json", "models/best.pt", "models/model.safetensors")
    for path in (*same, "metrics/eval/predictions_test.csv"):
        assert (streamed / path).read_bytes() == (memory / path).read_bytes(), path
    assert json.loads((streamed / "metrics/eval.json").read_text())["test"]["accuracy"] > 0.5
