"""Training, checkpoints and inference in process, on tiny random tensors: the fast unit tests of the model half."""

import pytest
import torch

from handsigns import checkpoint
from handsigns.adapt import plan_epochs
from handsigns.dataset import batch_bounds
from handsigns.errors import UserError
from handsigns.model import Net
from handsigns.params import build
from handsigns.params.recipe import RecipeParams
from handsigns.train import fit, make_optimizer, make_scheduler

from conftest import TINY, random_split


@pytest.mark.parametrize(("n", "bs", "sizes"), [(10, 4, [4, 4, 2]), (9, 4, [4, 5]), (8, 4, [4, 4]), (3, 32, [3])])
def test_a_last_batch_of_one_joins_the_previous(n, bs, sizes):
    bounds = batch_bounds(n, bs)
    assert [e - s for s, e in bounds] == sizes
    assert bounds[0][0] == 0 and bounds[-1][1] == n


def test_training_with_a_one_image_last_batch_and_batchnorm(tmp_path):
    recipe = build(RecipeParams, {**TINY, "epochs": 1, "batch_size": 4})
    summary = fit(
        recipe, ["a", "b"], random_split(9), random_split(4, seed=1), best_path=tmp_path / "best.pt"
    )  # batches 4+5, not 4+4+1
    assert summary["quality"]["epochs_run"] == 1


def test_onecycle_keeps_the_configured_momentum():
    recipe = build(
        RecipeParams, {"train": {"optimizer": "sgd", "momentum": 0.5, "schedule": "onecycle", "weight_decay": 0.0}}
    )
    opt = make_optimizer(recipe, Net(2, 16, 4))
    make_scheduler(recipe, opt, total=3)
    assert opt.param_groups[0]["momentum"] == 0.5


def test_best_checkpoint_rebuilds_the_classifier_that_scored_val(tmp_path):
    """fit saves the best epoch; checkpoint.load_model rebuilds it, normalisation included, and scoring it
    gives the val accuracy fit reported."""
    recipe = build(RecipeParams, {**TINY, "epochs": 2})
    val = random_split(12, seed=1)
    summary = fit(recipe, ["a", "b"], random_split(24), val, best_path=tmp_path / "best.pt")
    model, ckpt = checkpoint.load_model(tmp_path / "best.pt")
    assert ckpt["epoch"] == summary["quality"]["best_epoch"] and ckpt["classes"] == ["a", "b"]
    assert ckpt["params"]["lr"] == TINY["lr"]
    logprobs = checkpoint.score(model, val.images, batch_size=5)
    accuracy = (logprobs.argmax(1) == val.labels).float().mean().item()
    assert accuracy == pytest.approx(summary["best"]["accuracy"])
    assert torch.allclose(logprobs.exp(), model(val.images), atol=1e-6)  # the exported forward: probabilities


def test_a_foreign_checkpoint_is_one_clear_error(tmp_path):
    from handsigns.errors import UserError

    (tmp_path / "best.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="is not a handsigns checkpoint"):
        checkpoint.load_model(tmp_path / "best.pt")
    with pytest.raises(UserError, match="not found; run the train stage first"):
        checkpoint.load_model(tmp_path / "missing.pt")


@pytest.mark.parametrize(
    ("images", "epochs", "min_steps", "planned"), [(811, 20, 500, 20), (270, 20, 500, 56), (9, 3, 0, 3)]
)
def test_small_data_sets_get_as_many_updates(images, epochs, min_steps, planned):
    """With batch 32, SIGNS (811 images, 26 steps an epoch) keeps its 20 epochs; a set a third its size is
    given the epochs that make up train.min_steps steps, not a third of the updates."""
    recipe = build(RecipeParams, {"epochs": epochs, "train": {"min_steps": min_steps, "steps_factor": 1}})
    planned_epochs, steps = plan_epochs(recipe, images)
    assert planned_epochs == planned and planned_epochs * steps >= min_steps


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_identical_fits_write_identical_checkpoint_bytes(tmp_path, precision):
    """Byte-identical reruns on the CPU for each precision `auto` may choose, in the channels_last layout."""
    recipe = build(RecipeParams, {**TINY, "epochs": 1, "train": {**TINY["train"], "precision": precision}})
    for name in ("a.pt", "b.pt"):
        summary = fit(recipe, ["a", "b"], random_split(16), random_split(8, seed=1), best_path=tmp_path / name)
    assert summary["fingerprint"]["precision"] == precision
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()


class StopAt:
    """A DVCLive stand-in that presses Ctrl-C when epoch ``stop`` is logged (after epochs before it were saved)."""

    def __init__(self, stop: int | None = None) -> None:
        self.stop, self.step, self.rows = stop, 0, []

    def log_metric(self, name, value):
        self.rows.append((self.step, name, value))

    def next_step(self):
        if self.step == self.stop:
            raise KeyboardInterrupt


def test_an_interrupted_fit_resumes_to_the_bytes_of_an_uninterrupted_one(tmp_path, capsys):
    recipe = build(RecipeParams, {**TINY, "epochs": 4})
    train, val = random_split(24), random_split(12, seed=1)
    straight = StopAt()
    fit(recipe, ["a", "b"], train, val, live=straight, best_path=tmp_path / "straight.pt")

    resume = tmp_path / ".resume/train.pt"
    with pytest.raises(KeyboardInterrupt, match=r"stopped in epoch 3 of 4; epochs 1-2 are saved in .*run `dvc repro`"):
        fit(recipe, ["a", "b"], train, val, live=StopAt(3), best_path=tmp_path / "best.pt", resume_path=resume)
    (tmp_path / "best.pt").unlink(missing_ok=True)  # as DVC deletes a stage's outputs before running it
    resumed = StopAt()
    summary = fit(recipe, ["a", "b"], train, val, live=resumed, best_path=tmp_path / "best.pt", resume_path=resume)
    assert "resuming from" in capsys.readouterr().out and summary["quality"]["epochs_run"] == 4
    assert (tmp_path / "best.pt").read_bytes() == (tmp_path / "straight.pt").read_bytes()
    assert resumed.rows == straight.rows  # the curves, epochs 1-2 replayed from the checkpoint
    assert not resume.parent.exists()  # a completed run leaves nothing to resume, not even the folder


@pytest.mark.parametrize(("change", "part"), [({"lr": 0.02}, "params"), ({"seed": 1}, "params")])
def test_a_checkpoint_of_other_params_is_not_resumed(tmp_path, capsys, change, part):
    recipe = build(RecipeParams, {**TINY, "epochs": 3})
    train, val, resume = random_split(24), random_split(12, seed=1), tmp_path / "resume.pt"
    with pytest.raises(KeyboardInterrupt):
        fit(recipe, ["a", "b"], train, val, live=StopAt(2), best_path=tmp_path / "best.pt", resume_path=resume)
    other = build(RecipeParams, {**TINY, "epochs": 3, **change})
    fit(other, ["a", "b"], train, val, live=StopAt(), best_path=tmp_path / "best.pt", resume_path=resume)
    out = capsys.readouterr().out
    assert f"not resuming from {resume}: it was saved with other {part}; starting over" in out
    assert "resuming from" not in out.replace("not resuming from", "")


def test_other_data_or_a_damaged_checkpoint_starts_over(tmp_path, capsys):
    recipe = build(RecipeParams, {**TINY, "epochs": 3})
    val, resume = random_split(12, seed=1), tmp_path / "resume.pt"
    with pytest.raises(KeyboardInterrupt):
        fit(recipe, ["a", "b"], random_split(24), val, live=StopAt(2), best_path=tmp_path / "b.pt", resume_path=resume)
    saved = resume.read_bytes()
    fit(
        recipe,
        ["a", "b"],
        random_split(24, seed=5),
        val,
        live=StopAt(),
        best_path=tmp_path / "b.pt",
        resume_path=resume,
    )
    assert "it was saved with other data; starting over" in capsys.readouterr().out
    resume.write_bytes(saved[: len(saved) // 2])
    fit(recipe, ["a", "b"], random_split(24), val, live=StopAt(), best_path=tmp_path / "b.pt", resume_path=resume)
    assert f"not resuming from {resume}: unreadable" in capsys.readouterr().out


def test_out_of_memory_names_the_batch_size_to_try(tmp_path, monkeypatch):
    import handsigns.train

    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(handsigns.train, "train_epoch", no_memory)
    recipe = build(RecipeParams, {**TINY, "batch_size": 32})
    with pytest.raises(UserError, match=r"memory training with batch_size 32; .*dvc exp run -S batch_size=16"):
        fit(recipe, ["a", "b"], random_split(8), random_split(4, seed=1), best_path=tmp_path / "best.pt")
