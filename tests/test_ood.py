"""The out-of-distribution check (handsigns.ood) and the pictures it is judged on (handsigns.outliers): the
threshold's rule, the AUROC, the detector on known clusters, the exported score against PyTorch's, and
`handsigns predict` on pictures that are not hand signs, with conftest's tiny SIGNS model."""

import json
import shutil
import sys

import numpy as np
import pytest
import torch

from handsigns import ood, outliers
from handsigns.errors import UserError
from handsigns.predict import Predictor

from conftest import outlier_folder, run


@pytest.mark.parametrize("n", [1, 7, 20, 216, 1000])
@pytest.mark.parametrize("share", [0.01, 0.05, 0.2])
def test_at_most_the_share_of_val_is_flagged_and_none_sits_on_the_threshold(n, share):
    distances = np.random.default_rng(n).gamma(2.0, size=n)
    cut = ood.threshold(distances, share)
    flagged = int((distances > cut).sum())
    assert flagged == int(np.floor(share * n + 1e-9))  # as many as allowed, no more
    assert not np.isclose(distances, cut, rtol=1e-9, atol=0).any()


def test_auroc_is_the_chance_an_outside_score_beats_an_inside_one():
    rng = np.random.default_rng(0)
    inside, outside = rng.integers(0, 6, 40).astype(float), rng.integers(3, 9, 30).astype(float)
    pairs = [(o > i) + 0.5 * (o == i) for o in outside for i in inside]
    assert ood.auroc(inside, outside) == pytest.approx(np.mean(pairs), abs=1e-12)
    assert ood.auroc(inside, inside + 100) == 1.0 and ood.auroc(inside + 100, inside) == 0.0


def test_the_detector_knows_its_clusters_and_flags_what_lies_between_and_beyond():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0, 0, 0], [10, 0, 0, 0], [0, 10, 0, 0]])
    stretch = np.diag([3.0, 1, 0.2, 0.2])  # shared covariance, far from the identity: Mahalanobis, not Euclid

    def draw(n):
        labels = np.arange(n) % 3
        return centres[labels] + rng.normal(size=(n, 4)) @ stretch, labels

    train, labels = draw(3000)
    val, _ = draw(600)
    detector = ood.fit(train, labels, 3, val, 0.05)
    test, _ = draw(600)
    assert (detector.scores(test) > ood.UNSURE_ABOVE).mean() == pytest.approx(0.05, abs=0.025)
    along = np.array([[0.0, 0, 0, 0], [0.0, 0, 0, 0]])
    along[0, 0], along[1, 2] = 4.0, 4.0  # the same Euclidean step: within the spread along x, 20 sd across z
    near, far = detector.scores(centres[0] + along)
    assert near < ood.UNSURE_ABOVE < far
    assert (detector.scores(np.array([[5.0, 5, 0, 0], [40, 40, 0, 0]])) > ood.UNSURE_ABOVE).all()


def test_features_that_do_not_move_get_a_threshold_above_their_rounding():
    """A model whose features are one vector give or take float32 rounding (an epoch on a few dozen images):
    its images score far below 1 however the rounding falls, and a picture with other features is flagged."""
    rng = np.random.default_rng(0)
    constant = rng.uniform(0, 0.01, 256)
    train = constant + rng.normal(scale=1e-9, size=(60, 256))
    labels = np.arange(60) % 3
    detector = ood.fit(train, labels, 3, constant + rng.normal(scale=1e-9, size=(20, 256)), 0.05)
    assert detector.threshold == pytest.approx(ood.MIN_THRESHOLD * np.sqrt(256))
    assert (detector.scores(constant + rng.normal(scale=1e-8, size=(20, 256))) < 0.01).all()
    assert (detector.scores(rng.uniform(0, 0.01, (5, 256))) > ood.UNSURE_ABOVE).all()


def test_the_outlier_sets_are_the_same_pictures_every_time_at_any_size():
    first, again = outliers.sets(16, per_set=6), outliers.sets(16, per_set=6)
    assert set(first) == {"noise", "texture", "shapes", "text", "photos"}
    for name, pixels in first.items():
        assert pixels.shape == (6, 16, 16, 3) and pixels.dtype == np.uint8
        assert np.array_equal(pixels, again[name])
    assert outliers.sets(24, per_set=2)["photos"].shape == (2, 24, 24, 3)
    assert all(path.is_file() for path in outliers.sample_photos())


def test_the_exported_score_is_the_detectors_and_the_card_says_what_it_costs(tiny_model):
    from handsigns.checkpoint import load_model
    from handsigns.dataset import decode_all

    module, _ = load_model(tiny_model.best)
    card = json.loads(tiny_model.card.read_text())["ood"]
    assert card["output"] == ood.OUTPUT_NAME and card["unsure_above"] == ood.UNSURE_ABOVE
    assert {"test_flagged", "val_flagged", "auroc", "caught", "threshold_distance", "sets"} <= set(card)
    train = decode_all(tiny_model.photos["train"], 16)
    test = decode_all(tiny_model.photos["test"], 16)
    labels = torch.tensor([tiny_model.classes.index(p.name[0]) for p in tiny_model.photos["train"]])
    detector = ood.fit(ood.features(module, train, 64), labels.numpy(), 6, ood.features(module, test, 64), 0.05)
    assert card["threshold_distance"] == pytest.approx(detector.threshold, rel=1e-5)
    pictures = np.concatenate([test.permute(0, 2, 3, 1).numpy(), *outliers.sets(16, per_set=4).values()])
    exported = [p.ood_score for p in Predictor(tiny_model.onnx).predictions(pictures)]
    features = ood.features(module, torch.from_numpy(pictures.transpose(0, 3, 1, 2).copy()), 64)
    assert np.allclose(exported, detector.scores(features), rtol=1e-4)


@pytest.mark.slow
def test_predict_gives_each_picture_its_score_and_verdict_as_the_api_does(tiny_model, tmp_path):
    """How many it catches is the real model's to show (tests/test_pipeline_e2e.py): this model is 2 epochs."""
    folder = outlier_folder(tmp_path / "not-hands", 16, 4)
    files = [*sorted(folder.iterdir()), *tiny_model.photos["test"]]
    cmd = [sys.executable, "-m", "handsigns.cli", "predict", "--model", str(tiny_model.onnx), *map(str, files)]
    records = [json.loads(line) for line in run([*cmd, "--json"], tmp_path).stdout.splitlines()]
    api = Predictor(tiny_model.onnx).predict(files)
    assert [(r["unsure"], r["ood_score"]) for r in records] == [(p.unsure, round(p.ood_score, 4)) for p in api]
    assert all(p.unsure == (p.ood_score > ood.UNSURE_ABOVE) for p in api)
    lines = run(cmd, tmp_path).stdout.splitlines()
    assert [line.split("\t")[-2:] for line in lines] == [
        ["unsure" if p.unsure else "sure", f"{p.ood_score:.2f}"] for p in api
    ]


def test_a_model_without_the_check_still_labels_and_says_it_has_none(tiny_model, tmp_path):
    shutil.copy(tiny_model.onnx, tmp_path / "m.onnx")
    card = json.loads(tiny_model.card.read_text())
    (tmp_path / "m.json").write_text(json.dumps({**card, "ood": None}))
    predictor = Predictor(tmp_path / "m.onnx")
    prediction = predictor.predict(tiny_model.photos["test"][0])
    assert prediction.ood_score is None and prediction.unsure is False
    proc = run([sys.executable, "-m", "handsigns.cli", "predict", "--model", str(tmp_path / "m.onnx"),
                str(tiny_model.photos["test"][0])], tmp_path)  # fmt: skip
    assert proc.stderr.startswith("predict: ") and "has no out-of-distribution check" in proc.stderr
    assert len(proc.stdout.split("\t")) == 3  # path, label, probability: no verdict

    (tmp_path / "m.json").write_text(json.dumps({**card, "ood": {**card["ood"], "output": "novelty"}}))
    with pytest.raises(UserError, match=r"m\.onnx: the card says .* and an output novelty"):
        Predictor(tmp_path / "m.onnx")
