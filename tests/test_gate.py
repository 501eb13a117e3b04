"""`handsigns gate`: the metric regression gate against committed metrics."""

import json
import sys

import pytest

from conftest import make_project, run


def _metrics(repo, val: float, test: float, best_epoch: int = 7) -> None:
    (repo / "metrics").mkdir(exist_ok=True)
    (repo / "metrics/eval.json").write_text(json.dumps({"val": {"accuracy": val}, "test": {"accuracy": test}}))
    (repo / "metrics/train.json").write_text(json.dumps({"best_epoch": best_epoch}))
    (repo / "metrics/data.json").write_text(json.dumps({"images": {"test": 120}}))


@pytest.fixture
def repo(tmp_path):
    repo = make_project(tmp_path / "repo", {"source": "unused.zip"}, git=True)
    _metrics(repo, 0.99, 0.98)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "committed run"], repo)
    return repo


def gate(repo, *args):
    return run([sys.executable, "-m", "handsigns.cli", "gate", "--base", "HEAD", *args], repo, check=False)


def test_gate_fails_on_a_forged_accuracy_drop(repo):
    _metrics(repo, 0.99, 0.95)  # test accuracy -0.03, threshold 0.01 (params.yaml)
    proc = gate(repo)
    assert proc.returncode == 1
    assert "test.accuracy dropped by 0.0300 (0.9800 -> 0.9500)" in proc.stderr
    assert "val.accuracy" not in proc.stderr
    assert "test.accuracy" in proc.stdout  # the dvc metrics diff table is printed first


def test_gate_passes_within_the_threshold_and_on_gains(repo):
    _metrics(repo, 0.995, 0.975)  # -0.005 on test: allowed
    assert gate(repo).returncode == 0
    assert gate(repo, "--max-drop", "0.001").returncode == 1


def test_exact_gate_fails_when_the_committed_figures_do_not_reproduce(repo):
    assert gate(repo, "--exact").returncode == 0  # the committed files themselves reproduce
    _metrics(repo, 0.99, 0.98, best_epoch=8)
    proc = gate(repo, "--exact")
    assert proc.returncode == 1 and "metrics/train.json does not reproduce the committed figures: best_epoch" \
        in proc.stderr


def test_gate_without_a_committed_baseline_is_one_clear_error(tmp_path):
    repo = make_project(tmp_path / "repo", {"source": "unused.zip"}, git=True)
    proc = gate(repo)
    assert proc.returncode == 2 and proc.stderr.startswith("error: no metrics/eval.json committed at 'HEAD'")
