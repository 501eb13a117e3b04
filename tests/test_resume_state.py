"""resume.py on its own, in process: what a resume file holds, when it is trusted, and how a run clears it (the
whole loop interrupted and resumed: tests/test_train.py; through `dvc repro` and SIGKILL: tests/test_resume.py)."""

import dataclasses

import pytest
import torch

from handsigns import checkpoint, resume
from handsigns.model import Classifier, Net
from handsigns.params import build
from handsigns.params.recipe import RecipeParams
from handsigns.train import make_optimizer, make_scheduler

from conftest import TINY, random_split

CPU = torch.device("cpu")


def one_step(seed: int):
    """A tiny model, its optimiser and schedule after one step, and a generator drawn from: live state to save."""
    torch.manual_seed(seed)
    recipe = build(RecipeParams, TINY)
    model = Classifier(Net(2, 16, 4), [0.5] * 3, [0.25] * 3)
    optimizer = make_optimizer(recipe, model)
    scheduler = make_scheduler(recipe, optimizer, 10)
    model.log_probs(torch.rand(4, 3, 16, 16)).sum().neg().backward()
    optimizer.step()
    scheduler.step()
    gen = torch.Generator().manual_seed(seed)
    torch.rand(3, generator=gen)
    return model, optimizer, scheduler, gen


def test_a_saved_run_restores_weights_optimiser_schedule_streams_and_progress(tmp_path):
    saved = resume.Resume(tmp_path / "resume.pt", {"params": "p", "data": "d"})
    model, optimizer, scheduler, gen = one_step(seed=0)
    best = {"state_dict": checkpoint.cpu_state(model), "epoch": 1}
    progress = resume.Progress(3, resume.Best(0.5, 0.7, 1), best, 2, [[1, [1.0, 0.5], [0.9, 0.5]]], 4.5)
    saved.save(progress, model, optimizer, scheduler, gen, CPU)
    next_cpu_draw = torch.rand(2)  # what the restored stream must give again

    other = one_step(seed=1)
    other[2].step()  # a schedule one step further: only the restore can bring it back
    assert other[2].state_dict() != scheduler.state_dict()
    restored = saved.restore(*other, CPU)
    saved_best, restored_best = progress.best_checkpoint["state_dict"], restored.best_checkpoint.pop("state_dict")
    assert all(torch.equal(restored_best[k], v) for k, v in saved_best.items())
    progress.best_checkpoint = {"epoch": 1}
    assert dataclasses.asdict(restored) == dataclasses.asdict(progress)
    for name, tensor in model.net.state_dict().items():
        assert torch.equal(other[0].net.state_dict()[name], tensor), name
    assert other[1].state_dict()["state"][0]["exp_avg"].equal(optimizer.state_dict()["state"][0]["exp_avg"])
    assert other[2].state_dict() == scheduler.state_dict()
    assert torch.equal(torch.rand(3, generator=other[3]), torch.rand(3, generator=gen))
    assert torch.equal(torch.rand(2), next_cpu_draw)


def test_the_file_holds_plain_tensors_lists_and_dicts_in_its_layout(tmp_path):
    """What torch.load(weights_only=True) reads, in the order earlier runs wrote it: the best epoch a dict."""
    saved = resume.Resume(tmp_path / "resume.pt", {"params": "p"})
    progress = resume.Progress(epoch=2, best=resume.Best(0.75, 0.5, 2))
    saved.save(progress, *one_step(seed=0), CPU)
    state = torch.load(saved.path, weights_only=True)
    assert list(state) == ["signature", *resume.PROGRESS, "net", "rng", "optimizer", "scheduler"]
    assert state["best"] == {"accuracy": 0.75, "loss": 0.5, "epoch": 2}


def test_a_run_of_other_params_or_an_older_layout_starts_fresh_and_says_why(tmp_path, capsys):
    path = tmp_path / "resume.pt"
    model, optimizer, scheduler, gen = one_step(seed=0)
    live = (model, optimizer, scheduler, gen, CPU)
    resume.Resume(path, {"params": "p", "data": "d"}).save(resume.Progress(epoch=2), *live)
    fresh = resume.Resume(path, {"params": "q", "data": "d"}).restore(*live)
    assert fresh == resume.Progress()
    assert f"not resuming from {path}: it was saved with other params; starting over" in capsys.readouterr().out

    state = torch.load(path, weights_only=True)
    del state["since_best"]  # a file written before that field existed
    torch.save(state, path)
    assert resume.Resume(path, {"params": "p", "data": "d"}).restore(*live).epoch == 0
    assert f"not resuming from {path}: unreadable (KeyError); starting over" in capsys.readouterr().out
    assert resume.Resume(tmp_path / "none.pt", {}).restore(*live) == resume.Progress()


@pytest.mark.parametrize(("change", "part"), [("recipe", "params"), ("label", "data"), ("file", "data")])
def test_the_signature_changes_only_in_the_part_that_differs(change, part):
    recipe, train, val = build(RecipeParams, TINY), random_split(8), random_split(4, seed=1)
    before = resume.signature(recipe, ["a", "b"], train, val, CPU, "fp32")
    if change == "recipe":
        recipe = build(RecipeParams, {**TINY, "lr": 0.02})
    elif change == "label":
        train.labels[0] = 1 - train.labels[0]
    else:
        train.sha256[0] = "another file"
    after = resume.signature(recipe, ["a", "b"], train, val, CPU, "fp32")
    assert set(before) == {"params", "data", "code", "machine"}
    assert {k for k in before if before[k] != after[k]} == {part}


def test_finish_clears_the_file_its_cut_writes_and_the_empty_folder(tmp_path):
    folder = tmp_path / ".resume"
    folder.mkdir()
    path = folder / "train.pt"
    path.write_bytes(b"state")
    (folder / ".train.pt.x1.tmp").write_bytes(b"half")  # a write a kill cut short
    resume.Resume(path, {}).finish()
    assert not folder.exists()

    folder.mkdir()
    (folder / "notes.txt").write_text("someone else's")
    resume.Resume(path, {}).finish()
    assert (folder / "notes.txt").exists()  # a folder that holds more is left alone
