"""DVC stage `train`: fit the network on data/index/train.csv, select the best epoch on val.

Outputs: models/best.pt, models/checkpoint.pt, metrics/train.json (best epoch, epochs run), metrics/runtime.json
(seconds, images/s), metrics/fingerprint.json (the machine and software that ran) and metrics/train/ (per-epoch
curves, DVCLive).
"""

from pathlib import Path

from handsigns.data import load_split, read_classes
from handsigns.errors import run_main
from handsigns.params.train import load_hyper
from handsigns.train import fit, write_train_outputs

LIVE_DIR = Path("metrics/train")


def main() -> None:
    from dvclive import Live

    hyper = load_hyper()
    classes = read_classes()
    train = load_split("train", hyper.model.image_size, classes)
    val = load_split("val", hyper.model.image_size, classes)
    print(f"train: {len(train)} train / {len(val)} val images, {len(classes)} classes, "
          f"{hyper.model.image_size}px, {hyper.epochs} epochs")
    with Live(str(LIVE_DIR), save_dvc_exp=False, dvcyaml=None, report=None) as live:
        summary = fit(hyper, classes, train, val, live=live)
    write_train_outputs(summary, Path("metrics/train.json"), Path("metrics/runtime.json"),
                        Path("metrics/fingerprint.json"))
    q = summary["quality"]
    print(f"train: best val accuracy {summary['best']['accuracy']:.4f} at epoch {q['best_epoch']} "
          f"({q['epochs_run']} epochs, {summary['runtime']['train_seconds']:.1f} s)")


if __name__ == "__main__":
    run_main(main)
