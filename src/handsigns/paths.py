"""Where every stage writes, relative to the project root: the one list the stages, the gate and compare share.

dvc.yaml names the same paths (DVC reads no Python); ``tests/test_structure.py`` keeps the two equal.
"""

from __future__ import annotations

from pathlib import Path

# download
RAW = Path("data/raw")  # the extracted data set
DOWNLOADS = Path("data/.downloads")  # partial HTTP downloads, kept across runs to resume them (not an output)
PROVENANCE = Path("data/provenance.json")  # source, sha256, files, bytes

# split
INDEX = Path("data/index")  # {train,val,test,excluded,duplicates}.csv, classes.json
DATA_METRICS = Path("metrics/data.json")  # headline: classes, images per split, excluded
SPLIT_DETAILS = Path("metrics/data")
SPLIT_REPORT = SPLIT_DETAILS / "split.json"  # the full report: per class, duplicates, leaks, exclusions

# train
BEST = Path("models/best.pt")  # the best epoch's weights and everything needed to rebuild the model
TRAIN_METRICS = Path("metrics/train.json")  # best epoch, epochs run
RUNTIME = Path("metrics/runtime.json")  # seconds, images/s
FINGERPRINT = Path("metrics/fingerprint.json")  # the machine and software that trained
CURVES = Path("metrics/train")  # DVCLive: per-epoch loss and accuracy
# The last complete epoch of an unfinished run (weights, optimiser, schedule, RNGs, curves so far), deleted when
# the run completes. Not a DVC output: DVC deletes a stage's outputs before running it, and this must survive
# to be resumed (a `persist: true` output would survive too, but its hash would enter dvc.lock and differ
# between a resumed and an uninterrupted run).
RESUME = Path("models/.resume/train.pt")

# evaluate
EVAL_METRICS = Path("metrics/eval.json")  # headline: val/test accuracy, macro-F1, loss
EVAL_DETAILS = Path("metrics/eval")  # per-class and per-image tables, the misclassified gallery, reliability
# The right test images beside their occlusion maps: a picture of ~0.5 MB, so in DVC's cache, not in git
EXPLAINED = Path("metrics/gallery/explained_test.png")
CALIBRATION = EVAL_DETAILS / "calibration.json"  # the temperature fitted on val; the export stage puts it in the card
OOD_REPORT = EVAL_DETAILS / "ood.json"  # the out-of-distribution check: threshold, flagged, caught; into the card too

# export
MODELS = Path("models")
ONNX = MODELS / "model.onnx"
SAFETENSORS = MODELS / "model.safetensors"
CARD = MODELS / "model.json"

# What a run computed (byte-identical on the same machine and software) and how it went (differs run to run).
QUALITY_METRICS = (DATA_METRICS, TRAIN_METRICS, EVAL_METRICS)
RUNTIME_FILES = (RUNTIME, FINGERPRINT)
# The outputs git carries (``cache: false`` in dvc.yaml): a clone holds them without DVC's cache.
COMMITTED_OUTPUTS = (
    PROVENANCE,
    DATA_METRICS,
    SPLIT_DETAILS,
    TRAIN_METRICS,
    *RUNTIME_FILES,
    CURVES,
    EVAL_METRICS,
    EVAL_DETAILS,
)


def posix(paths: tuple[Path, ...]) -> list[str]:
    """Paths as git and DVC spell them (forward slashes), for ``git show REV:path`` and ``--targets``."""
    return [p.as_posix() for p in paths]
