"""The model half on a small generated data set: train -> evaluate -> export, via the real stage scripts
(subprocesses: slow; the in-process unit tests of training are tests/test_train.py, predict's tests
tests/test_predict.py)."""

import json
import shutil

import numpy as np
import onnx
import pandas as pd
import pytest
import torch

from conftest import TINY, colour_dataset, make_project, run_stage

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Data (3 classes of 20x20 PNGs, no splits given) through all five stages once. Not conftest's
    ``tiny_model``: these tests are about what the stage scripts themselves write (metrics, curves, tables,
    determinism across processes), so the model here is made by them."""
    base = tmp_path_factory.mktemp("tiny")
    source = colour_dataset(base / "source")
    proj = make_project(base / "proj", {"source": str(source)}, overrides=TINY)
    for name in ("download", "split", "train", "evaluate", "export"):
        run_stage(proj, name, check=True)
    return proj


def test_train_writes_quality_speed_and_fingerprint_apart(project):
    quality = json.loads((project / "metrics/train.json").read_text())
    runtime = json.loads((project / "metrics/runtime.json").read_text())
    fingerprint = json.loads((project / "metrics/fingerprint.json").read_text())
    assert quality.keys() == {"best_epoch", "epochs_run"}  # timings never pollute quality metrics
    assert quality["epochs_run"] == 2 and 1 <= quality["best_epoch"] <= 2
    # DVC metrics: the timings and the machine's three short names (`dvc exp show` tells rows apart by them)
    assert runtime.keys() == {"train_seconds", "train_images_per_s", "world_size", "device", "device_name", "precision"}
    assert runtime["world_size"] == 1
    assert runtime["device"] == "cpu" and runtime["precision"] == fingerprint["precision"]
    assert runtime["device_name"] and "(R)" not in runtime["device_name"]
    assert runtime["train_images_per_s"] > 0
    assert {"device_name", "torch", "cuda", "precision", "cpu_capability", "torch_threads"} <= set(fingerprint)
    ckpt = torch.load(project / "models/best.pt", weights_only=True)
    assert {"state_dict", "epoch", "params", "model", "normalisation", "classes"} <= set(ckpt)
    assert sorted(p.name for p in (project / "models").iterdir() if p.suffix == ".pt") == ["best.pt"]
    assert ckpt["classes"] == ["class_0", "class_1", "class_2"]
    assert len(ckpt["normalisation"]["mean"]) == 3
    curve = (project / "metrics/train/plots/metrics/val/accuracy.tsv").read_text().splitlines()
    assert curve[0] == "step\taccuracy" and [r.split("\t")[0] for r in curve[1:]] == ["1", "2"]


def test_evaluate_metrics_are_exact_per_sample(project):
    metrics = json.loads((project / "metrics/eval.json").read_text())
    for split in ("val", "test"):
        assert metrics[split].keys() == {"accuracy", "macro_f1", "loss", "ece"}  # the headline; counts live below
        table = pd.read_csv(project / f"metrics/eval/predictions_{split}.csv", dtype=str)
        index = pd.read_csv(project / f"data/index/{split}.csv")
        assert len(table) == len(index)
        correct = (table["actual"] == table["predicted"]).sum()
        assert metrics[split]["accuracy"] == round(correct / len(table), 6)
        per_class = pd.read_csv(project / f"metrics/eval/per_class_{split}.csv", dtype={"class": str})
        assert list(per_class.columns) == ["class", "precision", "recall", "f1", "support"]
        assert list(per_class["class"]) == ["class_0", "class_1", "class_2"]
        assert per_class["support"].tolist() == table["actual"].value_counts().reindex(per_class["class"]).tolist()
        hits = (table["actual"] == table["predicted"]).groupby(table["actual"]).sum()
        assert (
            per_class["recall"].tolist()
            == (hits / table["actual"].value_counts()).round(6)[per_class["class"]].tolist()
        )
        assert metrics[split]["macro_f1"] == round(per_class["f1"].mean(), 6)
        # ECE again from the table: top probability and right/wrong per image, 15 equal-width bins
        confidence = table["probability"].astype(float).to_numpy()
        right = (table["actual"] == table["predicted"]).to_numpy()
        bins = np.clip(np.ceil(confidence * 15).astype(int) - 1, 0, 14)
        gaps = [abs(right[bins == b].sum() - confidence[bins == b].sum()) for b in range(15)]
        assert metrics[split]["ece"] == pytest.approx(sum(gaps) / len(table), abs=1e-5)
    for gallery in ("metrics/eval/misclassified_test.png", "metrics/gallery/explained_test.png"):
        assert (project / gallery).stat().st_size > 0
    calibrated = json.loads((project / "metrics/eval/calibration.json").read_text())
    card = json.loads((project / "models/model.json").read_text())["calibration"]
    assert card["temperature"] == calibrated["temperature"] > 0
    assert (card["test_ece_before"], card["test_ece_after"]) == (metrics["test"]["ece"], calibrated["test_ece"])


def test_same_params_give_byte_identical_metrics(project, tmp_path):
    again = tmp_path / "again"
    shutil.copytree(project, again, ignore=shutil.ignore_patterns("models", "metrics"))
    for name in ("train", "evaluate"):
        run_stage(again, name, check=True)
    for rel in (
        "metrics/train.json",
        "metrics/eval.json",
        "metrics/eval/predictions_test.csv",
        "metrics/train/plots/metrics/train/loss.tsv",
    ):
        assert (again / rel).read_bytes() == (project / rel).read_bytes(), rel


def test_export_card_and_onnx_parity(project):
    card = json.loads((project / "models/model.json").read_text())
    assert card["classes"] == ["class_0", "class_1", "class_2"]
    assert card["image_size"] == 16 and card["input"]["dtype"] == "uint8"
    assert card["export_check"]["labels_equal"] == card["export_check"]["images"] > 0
    assert card["export_check"]["max_probability_diff"] <= 1e-4
    graph = onnx.load(str(project / "models/model.onnx")).graph
    dim0 = graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param and not dim0.dim_value  # dynamic batch
    from safetensors.torch import load_file

    weights = load_file(str(project / "models/model.safetensors"))
    assert "net.conv1.weight" in weights and "mean" in weights

    import onnxruntime as ort

    session = ort.InferenceSession(str(project / "models/model.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 7):  # dynamic batch really works
        out = session.run(None, {"pixels": np.zeros((batch, 3, 16, 16), np.uint8)})[0]
        assert out.shape == (batch, 3)


def test_export_gives_the_same_bytes_every_time_and_names_no_local_path(project):
    models = project / "models"
    first = {name: (models / name).read_bytes() for name in ("model.onnx", "model.safetensors", "model.json")}
    # a second process: nothing may depend on hash seeds, clocks or the checkout's path
    run_stage(project, "export", check=True)
    for name, data in first.items():
        assert (models / name).read_bytes() == data, name
    assert b"pkg.torch.onnx.stack_trace" not in first["model.onnx"]  # they hold the checkout's absolute path
    assert b"handsigns/model.py" not in first["model.onnx"]
    from safetensors import safe_open

    with safe_open(str(models / "model.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["handsigns"]) == {"classes": ["class_0", "class_1", "class_2"], "image_size": 16}


# The next two need some trained model, not this module's: conftest's tiny_model (made in process).


def test_export_fails_when_runtimes_disagree(tiny_model, tmp_path):
    from handsigns.checkpoint import load_model
    from handsigns.errors import UserError
    from handsigns.export import save_onnx, verify

    module, _ = load_model(tiny_model.best)
    save_onnx(module, 16, tmp_path / "m.onnx")
    with torch.no_grad():  # the PyTorch side changes after export: the check must catch it
        module.net.fc2.bias.add_(torch.linspace(5.0, -5.0, len(tiny_model.classes)))
    pixels = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    with pytest.raises(UserError, match="export check failed"):
        verify(module, tmp_path / "m.onnx", pixels)


def test_failed_export_check_leaves_the_previous_export_untouched(tiny_model, tmp_path, monkeypatch):
    import handsigns.export as export
    from handsigns.checkpoint import load_model
    from handsigns.errors import UserError
    from handsigns.export import export_verified

    out = tmp_path / "models"
    shutil.copytree(tiny_model.best.parent, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    module, ckpt = load_model(out / "best.pt")
    real = export.onnx_outputs
    monkeypatch.setattr(export, "onnx_outputs", lambda *a: [o[..., ::-1] for o in real(*a)])  # runtimes disagree
    with pytest.raises(UserError, match="export check failed"):
        export_verified(module, ckpt, torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8), {}, {}, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_patience_stops_early_and_keeps_the_best_epoch(project, tmp_path):
    stalled = tmp_path / "stalled"
    shutil.copytree(project, stalled, ignore=shutil.ignore_patterns("models", "metrics"))
    params = (stalled / "params.yaml").read_text()
    params = params.replace("epochs: 2", "epochs: 6").replace("lr: 0.01", "lr: 1.0e-12")
    params = params.replace("patience: 0", "patience: 2").replace("batchnorm: true", "batchnorm: false")
    (stalled / "params.yaml").write_text(params)
    out = run_stage(stalled, "train", check=True).stdout
    quality = json.loads((stalled / "metrics/train.json").read_text())
    # No batch-norm statistics and a vanishing learning rate: val accuracy cannot improve after epoch 1,
    # so training stops after 1 + patience epochs.
    assert quality == {**quality, "best_epoch": 1, "epochs_run": 3}
    assert "early stop" in out


def test_checkpoints_of_identical_runs_are_identical_bytes(project, tmp_path):
    again = tmp_path / "again"
    shutil.copytree(project, again, ignore=shutil.ignore_patterns("models", "metrics"))
    run_stage(again, "train", check=True)
    # so dvc.lock does not see a new model for the same params
    assert (again / "models/best.pt").read_bytes() == (project / "models/best.pt").read_bytes()


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("seed", 2**32, "seed = 4294967296 is out of range"),
        ("train", {"device": "meta"}, "train.device = 'meta' is not allowed"),
    ],
)
def test_bad_training_params_are_one_clear_error(project, tmp_path, key, value, fragment):
    bad = tmp_path / "bad"
    shutil.copytree(project, bad, ignore=shutil.ignore_patterns("models", "metrics"))
    import yaml

    params = yaml.safe_load((bad / "params.yaml").read_text())
    params[key] = {**params[key], **value} if isinstance(value, dict) else value
    (bad / "params.yaml").write_text(yaml.safe_dump(params))
    proc = run_stage(bad, "train")
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
    assert fragment in proc.stderr
