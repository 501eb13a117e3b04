"""`handsigns predict` and the Python API (``Predictor``) on the session's tiny exported model (conftest's
``tiny_model``): good and bad files, agreement with evaluate, a predict-only install, broken model cards."""

import json
import shutil
import sys

import numpy as np
import pandas as pd
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from PIL import Image

from handsigns.errors import UserError

from conftest import REPO, bomb_jpeg, run

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: its backport (in the lock for 3.10)
    import tomli as tomllib

pytestmark = pytest.mark.slow  # a CLI subprocess or two each

PREDICT = [sys.executable, "-m", "handsigns.cli", "predict"]


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


def test_predict_good_and_bad_files(tiny_model, tmp_path):
    folder = _images(tmp_path / "imgs")
    cmd = [*PREDICT, "--model", str(tiny_model.onnx)]
    proc = run([*cmd, str(folder), str(tmp_path / "missing.png")], tmp_path, check=False)
    assert proc.returncode == 1
    lines = proc.stdout.strip().splitlines()
    assert sorted(line.split("\t")[0].rsplit("/", 1)[1] for line in lines) == [
        "grey.png",
        "rgb.jpg",
        "rgba.png",
        "small.bmp",
    ]
    for line in lines:
        _path, label, prob, verdict, score = line.split("\t")  # the last pair: the out-of-distribution check
        assert label in tiny_model.classes and 0 < float(prob) <= 1
        assert verdict == ("unsure" if float(score) > 1 else "sure")
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 3 and all(e.startswith("error: ") for e in errors)
    assert any("broken.jpg" in e for e in errors) and any("missing.png" in e for e in errors)
    assert any("bomb.jpg: too large to decode (ImageTooLarge: 8000x8000 is 64.0 megapixels" in e for e in errors)

    proc = run([*cmd, "--json", "--top-k", "2", str(folder / "rgb.jpg")], tmp_path)
    record = json.loads(proc.stdout)
    assert set(record) >= {"path", "label", "probability"} and len(record["top_k"]) == 2
    assert record["top_k"][0]["label"] == record["label"]
    assert record["top_k"][0]["probability"] >= record["top_k"][1]["probability"]


def test_predict_agrees_with_evaluate_and_needs_nothing_from_the_pipeline_extra(tiny_model, tmp_path):
    project = tiny_model.root
    table = pd.read_csv(project / "metrics/eval/predictions_test.csv", dtype=str)
    paths = [str(project / "data/raw" / p) for p in table["path"]]
    # evaluate's table holds the network's own probabilities; predict reports them at the card's temperature
    # (tests/test_calibration.py), so here a copy of the export whose card has none.
    models = tmp_path / "models"
    shutil.copytree(project / "models", models)
    card = json.loads((models / "model.json").read_text())
    assert card.pop("calibration")["temperature"] != 1.0
    (models / "model.json").write_text(json.dumps(card))
    # The distributions behind every module predict loaded: none may come from the `pipeline` extra
    # (torch, DVC, pandas, ...), which a predict-only install (`pip install handsigns`) does not have.
    code = (
        "import sys; from importlib.metadata import packages_distributions; from handsigns.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n"
        "    dists = packages_distributions()\n"
        "    loaded = {d for m in list(sys.modules) for d in dists.get(m.split('.')[0], [])}\n"
        "    print('LOADED', ' '.join(sorted(loaded)), file=sys.stderr); raise\n"
    )
    proc = run(
        [sys.executable, "-c", code, "predict", "--json", "--model", str(models / "model.onnx"), *paths], project
    )
    loaded = {canonicalize_name(d) for d in proc.stderr.split("LOADED", 1)[1].split()}
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pipeline = {canonicalize_name(Requirement(r).name) for r in pyproject["optional-dependencies"]["pipeline"]}
    assert {"onnxruntime", "numpy", "pillow"} <= loaded and not loaded & pipeline, loaded & pipeline
    got = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [g["label"] for g in got] == list(table["predicted"])
    assert np.allclose([g["probability"] for g in got], table["probability"].astype(float), atol=1e-4)


def test_the_python_api_labels_paths_pil_images_and_arrays_as_the_cli_does(tiny_model, tmp_path):
    from handsigns import Prediction, Predictor
    from handsigns.imaging import load_rgb

    table = pd.read_csv(tiny_model.root / "metrics/eval/predictions_test.csv", dtype=str).head(5)
    p = Predictor(tiny_model.onnx, calibrated=False)  # evaluate's table: the network's own probabilities
    # Lossless copies of the photos as the model sees them (PNG, model-sized): a PIL image or an array is decoded
    # in full, where a JPEG file at 4x the model's size is DCT-scaled (imaging.open_image's draft) first.
    paths = [tmp_path / f"{i}.png" for i in range(len(table))]
    for path, photo in zip(paths, table["path"], strict=True):
        Image.fromarray(load_rgb(tiny_model.root / "data/raw" / photo, p.image_size)).save(path)
    one = p.predict(paths[0])
    assert isinstance(one, Prediction) and one.label == table["predicted"][0]
    assert one.probability == pytest.approx(float(table["probability"][0]), abs=1e-4)
    assert sum(one.probabilities.values()) == pytest.approx(1, abs=1e-5) and list(one.probabilities) == p.classes
    many = p.predict([str(q) for q in paths])
    assert [m.label for m in many] == list(table["predicted"])
    assert [m.label for m in Predictor(tiny_model.onnx).predict(paths)] == list(table["predicted"])  # calibrated
    pil = [Image.open(q) for q in paths]
    assert p.predict(pil) == many  # a PIL image takes the file's own decoding path
    arrays = np.stack([np.asarray(i.convert("RGB")) for i in pil])  # N x H x W x 3: many
    assert [m.label for m in p.predict(arrays)] == list(table["predicted"])
    with pytest.raises(UserError, match="must be uint8 pixels 0-255, not float64"):
        p.predict(arrays[0] / 255.0)


def test_predict_without_model_is_one_clear_error(tmp_path):
    proc = run([*PREDICT, "--model", str(tmp_path / "none.onnx"), "x.jpg"], tmp_path, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: ")


def test_predict_with_a_broken_model_card_is_one_clear_error(tiny_model, tmp_path):
    shutil.copy(tiny_model.onnx, tmp_path / "m.onnx")
    (tmp_path / "m.json").write_text('{"classes": ["a"]')
    proc = run([*PREDICT, "--model", str(tmp_path / "m.onnx"), "x.png"], tmp_path, check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "m.json is not a handsigns model card" in proc.stderr


@pytest.mark.parametrize(
    ("change", "says"), [({"image_size": 32}, "from 32x32 images"), ({"classes": ["a", "b"]}, "says 2 classes")]
)
def test_predict_with_a_card_of_another_model_is_refused(tiny_model, tmp_path, change, says):
    """A model card that does not match its ONNX model (other input size or class count) is one error line."""
    shutil.copy(tiny_model.onnx, tmp_path / "m.onnx")
    card = json.loads(tiny_model.card.read_text())
    (tmp_path / "m.json").write_text(json.dumps({**card, **change}))
    (tmp_path / "x.png").write_bytes(tiny_model.card.read_bytes())  # never reached
    proc = run([*PREDICT, "--model", "m.onnx", "x.png"], tmp_path, check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "m.json does not describe m.onnx" in proc.stderr and says in proc.stderr
    assert "pixels [" in proc.stderr and "probabilities [" in proc.stderr  # what the model really is
