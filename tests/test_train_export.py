"""The model half on a small generated data set: train -> evaluate -> export, via the real stage scripts
(subprocesses: slow; the in-process unit tests of training are tests/test_train.py)."""

import json
import shutil
import sys

import numpy as np
import onnx
import pandas as pd
import pytest
import torch
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from PIL import Image

from handsigns.errors import UserError

from conftest import REPO, TINY, bomb_jpeg, colour_dataset, make_project, run, stage

tomllib = pytest.importorskip("tomllib")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Data (3 classes of 20x20 PNGs, no splits given) through all five stages once."""
    base = tmp_path_factory.mktemp("tiny")
    source = colour_dataset(base / "source")
    proj = make_project(base / "proj", {"source": str(source)}, overrides=TINY)
    for name in ("download", "split", "train", "evaluate", "export"):
        stage(name, proj)
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
        assert metrics[split].keys() == {"accuracy", "macro_f1", "loss"}  # the headline; counts live below
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
    assert (project / "metrics/eval/misclassified_test.png").stat().st_size > 0


def test_same_params_give_byte_identical_metrics(project, tmp_path):
    again = tmp_path / "again"
    shutil.copytree(project, again, ignore=shutil.ignore_patterns("models", "metrics"))
    for name in ("train", "evaluate"):
        stage(name, again)
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
    stage("export", project)  # a second process: nothing may depend on hash seeds, clocks or the checkout's path
    for name, data in first.items():
        assert (models / name).read_bytes() == data, name
    assert b"pkg.torch.onnx.stack_trace" not in first["model.onnx"]  # they hold the checkout's absolute path
    assert b"handsigns/model.py" not in first["model.onnx"]
    from safetensors import safe_open

    with safe_open(str(models / "model.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["handsigns"]) == {"classes": ["class_0", "class_1", "class_2"], "image_size": 16}


def test_export_fails_when_runtimes_disagree(project, tmp_path):
    from handsigns.checkpoint import load_model
    from handsigns.errors import UserError
    from handsigns.export import save_onnx, verify

    module, _ = load_model(project / "models/best.pt")
    save_onnx(module, 16, tmp_path / "m.onnx")
    with torch.no_grad():  # the PyTorch side changes after export: the check must catch it
        module.net.fc2.bias.add_(torch.tensor([5.0, -5.0, 0.0]))
    pixels = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    with pytest.raises(UserError, match="export check failed"):
        verify(module, tmp_path / "m.onnx", pixels)


def _images(folder):
    folder.mkdir()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(folder / "rgb.jpg")
    Image.fromarray(rng.integers(0, 255, (20, 20, 4), dtype=np.uint8), "RGBA").save(folder / "rgba.png")
    Image.fromarray(rng.integers(0, 255, (33, 17), dtype=np.uint8), "L").save(folder / "grey.png")
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(folder / "small.bmp")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    bomb_jpeg(folder / "bomb.jpg")
    return folder


def test_predict_good_and_bad_files(project, tmp_path):
    folder = _images(tmp_path / "imgs")
    cmd = [sys.executable, "-m", "handsigns.cli", "predict", "--model", str(project / "models/model.onnx")]
    proc = run([*cmd, str(folder), str(tmp_path / "missing.png")], project, check=False)
    assert proc.returncode == 1
    lines = proc.stdout.strip().splitlines()
    assert sorted(line.split("\t")[0].rsplit("/", 1)[1] for line in lines) == [
        "grey.png",
        "rgb.jpg",
        "rgba.png",
        "small.bmp",
    ]
    for line in lines:
        _path, label, prob = line.split("\t")
        assert label in {"class_0", "class_1", "class_2"} and 0 < float(prob) <= 1
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 3 and all(e.startswith("error: ") for e in errors)
    assert any("broken.jpg" in e for e in errors) and any("missing.png" in e for e in errors)
    assert any("bomb.jpg: too large to decode (ImageTooLarge: 8000x8000 is 64.0 megapixels" in e for e in errors)

    proc = run([*cmd, "--json", "--top-k", "2", str(folder / "rgb.jpg")], project)
    record = json.loads(proc.stdout)
    assert set(record) >= {"path", "label", "probability"} and len(record["top_k"]) == 2
    assert record["top_k"][0]["label"] == record["label"]
    assert record["top_k"][0]["probability"] >= record["top_k"][1]["probability"]


def test_predict_agrees_with_evaluate_and_needs_nothing_from_the_pipeline_extra(project):
    table = pd.read_csv(project / "metrics/eval/predictions_test.csv", dtype=str)
    paths = [str(project / "data/raw" / p) for p in table["path"]]
    # The distributions behind every module predict loaded: none may come from the `pipeline` extra
    # (torch, DVC, pandas, ...), which a predict-only install (`pip install handsigns`) does not have.
    code = (
        "import sys; from importlib.metadata import packages_distributions; from handsigns.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n"
        "    dists = packages_distributions()\n"
        "    loaded = {d for m in list(sys.modules) for d in dists.get(m.split('.')[0], [])}\n"
        "    print('LOADED', ' '.join(sorted(loaded)), file=sys.stderr); raise\n"
    )
    proc = run([sys.executable, "-c", code, "predict", "--json", "--model", "models/model.onnx", *paths], project)
    loaded = {canonicalize_name(d) for d in proc.stderr.split("LOADED", 1)[1].split()}
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pipeline = {canonicalize_name(Requirement(r).name) for r in pyproject["optional-dependencies"]["pipeline"]}
    assert {"onnxruntime", "numpy", "pillow"} <= loaded and not loaded & pipeline, loaded & pipeline
    got = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [g["label"] for g in got] == list(table["predicted"])
    assert np.allclose([g["probability"] for g in got], table["probability"].astype(float), atol=1e-4)


def test_the_python_api_labels_paths_pil_images_and_arrays_as_the_cli_does(project):
    from handsigns import Prediction, Predictor

    table = pd.read_csv(project / "metrics/eval/predictions_test.csv", dtype=str).head(5)
    paths = [project / "data/raw" / p for p in table["path"]]
    p = Predictor(project / "models/model.onnx")
    one = p.predict(paths[0])
    assert isinstance(one, Prediction) and one.label == table["predicted"][0]
    assert one.probability == pytest.approx(float(table["probability"][0]), abs=1e-4)
    assert sum(one.probabilities.values()) == pytest.approx(1, abs=1e-5) and list(one.probabilities) == p.classes
    many = p.predict([str(q) for q in paths])
    assert [m.label for m in many] == list(table["predicted"])
    pil = [Image.open(q) for q in paths]
    assert p.predict(pil) == many  # a PIL image takes the file's own decoding path
    arrays = np.stack([np.asarray(i.convert("RGB")) for i in pil])  # N x H x W x 3: many
    assert [m.label for m in p.predict(arrays)] == list(table["predicted"])
    with pytest.raises(UserError, match="must be uint8 pixels 0-255, not float64"):
        p.predict(arrays[0] / 255.0)


def test_predict_without_model_is_one_clear_error(tmp_path):
    proc = run(
        [sys.executable, "-m", "handsigns.cli", "predict", "--model", str(tmp_path / "none.onnx"), "x.jpg"],
        tmp_path,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: ")


def test_patience_stops_early_and_keeps_the_best_epoch(project, tmp_path):
    stalled = tmp_path / "stalled"
    shutil.copytree(project, stalled, ignore=shutil.ignore_patterns("models", "metrics"))
    params = (stalled / "params.yaml").read_text()
    params = params.replace("epochs: 2", "epochs: 6").replace("lr: 0.01", "lr: 1.0e-12")
    params = params.replace("patience: 0", "patience: 2").replace("batchnorm: true", "batchnorm: false")
    (stalled / "params.yaml").write_text(params)
    out = stage("train", stalled).stdout
    quality = json.loads((stalled / "metrics/train.json").read_text())
    # No batch-norm statistics and a vanishing learning rate: val accuracy cannot improve after epoch 1,
    # so training stops after 1 + patience epochs.
    assert quality == {**quality, "best_epoch": 1, "epochs_run": 3}
    assert "early stop" in out


def test_checkpoints_of_identical_runs_are_identical_bytes(project, tmp_path):
    again = tmp_path / "again"
    shutil.copytree(project, again, ignore=shutil.ignore_patterns("models", "metrics"))
    stage("train", again)
    # so dvc.lock does not see a new model for the same params
    assert (again / "models/best.pt").read_bytes() == (project / "models/best.pt").read_bytes()


def test_failed_export_check_leaves_the_previous_export_untouched(project, tmp_path, monkeypatch):
    import handsigns.export as export
    from handsigns.checkpoint import load_model
    from handsigns.errors import UserError
    from handsigns.export import export_verified

    out = tmp_path / "models"
    shutil.copytree(project / "models", out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    module, ckpt = load_model(out / "best.pt")
    real = export.onnx_probabilities
    monkeypatch.setattr(export, "onnx_probabilities", lambda path, px: real(path, px)[:, ::-1])  # runtimes disagree
    with pytest.raises(UserError, match="export check failed"):
        export_verified(module, ckpt, 16, torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8), {}, {}, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


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
    proc = stage("train", bad, check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
    assert fragment in proc.stderr


def test_predict_with_a_broken_model_card_is_one_clear_error(project, tmp_path):
    shutil.copy(project / "models/model.onnx", tmp_path / "m.onnx")
    (tmp_path / "m.json").write_text('{"classes": ["a"]')
    proc = run(
        [sys.executable, "-m", "handsigns.cli", "predict", "--model", str(tmp_path / "m.onnx"), "x.png"],
        tmp_path,
        check=False,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "m.json is not a handsigns model card" in proc.stderr


@pytest.mark.parametrize(
    ("change", "says"), [({"image_size": 32}, "from 32x32 images"), ({"classes": ["a", "b"]}, "says 2 classes")]
)
def test_predict_with_a_card_of_another_model_is_refused(project, tmp_path, change, says):
    """A model card that does not match its ONNX model (other input size or class count) is one error line."""
    shutil.copy(project / "models/model.onnx", tmp_path / "m.onnx")
    card = json.loads((project / "models/model.json").read_text())
    (tmp_path / "m.json").write_text(json.dumps({**card, **change}))
    (tmp_path / "x.png").write_bytes((project / "models/model.json").read_bytes())  # never reached
    proc = run([sys.executable, "-m", "handsigns.cli", "predict", "--model", "m.onnx", "x.png"], tmp_path, check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "m.json does not describe m.onnx" in proc.stderr and says in proc.stderr
    assert "pixels [" in proc.stderr and "probabilities [" in proc.stderr  # what the model really is
