"""DVC stage `train`: fit the network on data/index/train.csv, select the best epoch on val. An interrupted run
(kill, Ctrl-C, a lost machine) resumes from its last complete epoch when the stage runs again (models/.resume/).

Outputs: models/best.pt, metrics/train.json (best epoch, epochs run), metrics/runtime.json (seconds, images/s),
metrics/fingerprint.json (the machine and software that ran) and metrics/train/ (per-epoch curves, DVCLive).
With nproc x dist.nnodes > 1 it runs itself again under torchrun (handsigns.distributed).
"""

import sys

from handsigns import distributed
from handsigns.adapt import plan_epochs
from handsigns.dataset import load_splits, read_classes
from handsigns.errors import run_main
from handsigns.files import write_json
from handsigns.params import load
from handsigns.params.memory import MemoryParams
from handsigns.params.recipe import RecipeParams
from handsigns.paths import CURVES, FINGERPRINT, RESUME, RUNTIME, TRAIN_METRICS
from handsigns.train import fit


def main() -> None:
    from dvclive import Live

    recipe = load(RecipeParams)
    code = distributed.relaunch(recipe.nproc, recipe.dist.nnodes, recipe.dist.rdzv_endpoint)
    if code is not None:  # the torchrun processes ran the stage; their exit is ours
        sys.exit(code)
    world = distributed.current()
    if world.distributed:
        distributed.die_with_parent()
    classes = read_classes()
    budget = load(MemoryParams).budget_gb
    train, val = load_splits(("train", "val"), recipe.model.image_size, classes, budget, "train")
    epochs, steps = plan_epochs(recipe, len(train))
    raised = f" (raised from {recipe.epochs}: train.min_steps, train.steps_factor)" if epochs > recipe.epochs else ""
    processes = f" on each of {world.size} processes" if world.distributed else ""
    images = f"{len(train)} train / {len(val)} val images, {len(classes)} classes, {recipe.model.image_size}px"
    world.say(f"train: {images}, {epochs} epochs of {steps} steps{processes}{raised}")
    if not world.main:  # rank 0 alone writes curves, checkpoints and metrics
        fit(recipe, classes, train, val, resume_path=RESUME)
        return
    with Live(str(CURVES), save_dvc_exp=False, dvcyaml=None, report=None) as live:
        summary = fit(recipe, classes, train, val, live=live, resume_path=RESUME)
    # Quality and speed are DVC metrics; the fingerprint (strings mostly) is a committed file the gate reads.
    write_json(TRAIN_METRICS, summary["quality"])
    write_json(RUNTIME, summary["runtime"])
    write_json(FINGERPRINT, summary["fingerprint"])
    q = summary["quality"]
    print(
        f"train: best val accuracy {summary['best']['accuracy']:.4f} at epoch {q['best_epoch']} "
        f"({q['epochs_run']} epochs, {summary['runtime']['train_seconds']:.1f} s)"
    )


if __name__ == "__main__":
    run_main(main)
