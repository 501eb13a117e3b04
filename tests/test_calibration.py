"""Calibration (handsigns.calibration): ECE and reliability bins computed by hand, temperature scaling that
recovers a known temperature, and a Predictor that applies the card's temperature without changing a label."""

import json
import shutil

import numpy as np
import pytest

from handsigns import Predictor, calibration


def sampled(n: int, temperature: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Log-probabilities of random logits, and labels drawn from softmax(logits / temperature): scores whose
    true temperature is known."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, size=(n, 6))
    truth = np.exp(calibration.scale(logits, temperature))
    labels = np.array([rng.choice(6, p=p) for p in truth])
    return calibration.scale(logits, 1.0), labels


def test_ece_and_the_reliability_bins_by_hand():
    probs = np.array([[0.95, 0.05], [0.95, 0.05], [0.6, 0.4], [0.3, 0.7]])
    labels = np.array([0, 1, 0, 1])  # confident bin (0.95): 1 of 2 right; 0.6 and 0.7 bins: both right
    table = calibration.reliability(probs, labels, bins=10)
    assert table.to_dict("list") == {
        "bin": ["0.500-0.600", "0.600-0.700", "0.900-1.000"],
        "confidence": [0.6, 0.7, 0.95],
        "accuracy": [1.0, 1.0, 0.5],
        "count": [1, 1, 2],
    }
    # (|1 - 0.6| + |1 - 0.7| + 2 |0.5 - 0.95|) / 4
    assert calibration.ece(probs, labels, bins=10) == pytest.approx((0.4 + 0.3 + 0.9) / 4)
    assert calibration.ece(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 1])) == 0.0


@pytest.mark.parametrize("true_t", [0.5, 2.0])
def test_temperature_scaling_recovers_a_known_temperature_and_lowers_the_error(true_t):
    logprobs, labels = sampled(20_000, true_t)
    t = calibration.fit_temperature(logprobs, labels)
    assert t == pytest.approx(true_t, rel=0.05)
    assert calibration.nll(logprobs, labels, t) < calibration.nll(logprobs, labels, 1.0)
    before, after = np.exp(logprobs), np.exp(calibration.scale(logprobs, t))
    assert calibration.ece(after, labels) < calibration.ece(before, labels) / 3
    assert (after.argmax(1) == before.argmax(1)).all()  # never a label changed
    assert calibration.fit_temperature(logprobs, labels) == t  # no random start: the same T every time


def test_a_zero_probability_stays_zero_at_any_temperature():
    logp = calibration.log_of(np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]], dtype=np.float32))
    for t in (0.1, 1.0, 10.0):
        p = np.exp(calibration.scale(logp, t))
        assert np.isfinite(p).all() and p[:, 2].max() < 1e-30 and np.allclose(p.sum(1), 1)


def test_predictor_applies_the_cards_temperature_and_keeps_its_labels(tiny_model, tmp_path):
    card = json.loads(tiny_model.card.read_text())
    assert card["calibration"]["temperature"] > 0 and card["calibration"]["apply"]
    models = tmp_path / "models"
    shutil.copytree(tiny_model.onnx.parent, models)
    card["calibration"]["temperature"] = 3.0  # a flatter one than fitted: easy to see
    (models / "model.json").write_text(json.dumps(card))
    images = [str(p) for p in tiny_model.photos["test"]]
    raw = Predictor(models / "model.onnx", calibrated=False).predict(images)
    flat = Predictor(models / "model.onnx").predict(images)
    assert [p.label for p in flat] == [p.label for p in raw]
    for r, f in zip(raw, flat, strict=True):
        expect = np.exp(calibration.scale(calibration.log_of([list(r.probabilities.values())]), 3.0))[0]
        assert np.allclose(list(f.probabilities.values()), expect, atol=1e-6)
        assert f.probability < r.probability or r.probability < 1.5 / len(tiny_model.classes)
