"""`handsigns gate` end to end: the CLI on real git repositories with committed metrics (what `.ci/run` runs).

Slow (a git repository and DVC per test); the rules themselves, in process: tests/test_gate_rules.py."""

import json
import sys
from pathlib import Path

import pytest
import yaml

from conftest import TINY, colour_dataset, make_project, run

pytestmark = pytest.mark.slow


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


def gate(repo, *args, base: str = "HEAD"):
    proc = run([sys.executable, "-m", "handsigns.cli", "gate", "--base", base, *args], repo, check=False)
    assert "Traceback" not in proc.stderr, proc.stderr  # exit 1 must mean "gate failed", never a crash
    return proc


def commit(repo, message: str) -> None:
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", message], repo)


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
    proc = gate(repo, "--max-drop", "0.001")
    assert proc.returncode == 1 and "gate: FAIL: test.accuracy dropped by 0.0050" in proc.stderr


def test_a_nan_accuracy_fails(repo):
    (repo / "metrics/eval.json").write_text('{"val": {"accuracy": NaN}, "test": {"accuracy": 0.98}}')
    proc = gate(repo)
    assert proc.returncode == 1 and "gate: FAIL: val.accuracy dropped by nan" in proc.stderr


def test_exact_gate_fails_when_the_committed_figures_do_not_reproduce(repo):
    assert gate(repo, "--exact").returncode == 0  # the committed files themselves reproduce
    _metrics(repo, 0.99, 0.98, best_epoch=8)
    proc = gate(repo, "--exact")
    assert (
        proc.returncode == 1
        and "metrics/train.json does not reproduce the committed figures: best_epoch" in proc.stderr
    )


FINGERPRINT = {
    "device": "cpu",
    "device_name": "AMD EPYC",
    "cpu_capability": "AVX512",
    "torch_threads": 2,
    "torch": "2.14.1",
    "precision": "fp32",
    "pillow": "13.0.0",
    "platform": "Linux-6.1",
}


def _runtime(repo, train_seconds: float = 100.0, **changes) -> None:
    (repo / "metrics/runtime.json").write_text(json.dumps({"train_seconds": train_seconds}))
    (repo / "metrics/fingerprint.json").write_text(json.dumps({**FINGERPRINT, **changes}))


def test_byte_equality_applies_on_the_committed_runs_machine_and_software(repo):
    _runtime(repo)
    commit(repo, "committed run with its runtime")
    _metrics(repo, 0.99, 0.98, best_epoch=8)  # last bits moved: a different trajectory
    _runtime(repo, train_seconds=90.0, platform="Linux-6.2")  # timings differ, and keys that do not decide bytes
    proc = gate(repo, "--exact")
    assert proc.returncode == 1 and "metrics/train.json does not reproduce the committed figures" in proc.stderr
    assert "gate: note:" not in proc.stdout


@pytest.mark.parametrize("change", [{"torch_threads": 16}, {"cpu_capability": "AVX2"}, {"pillow": "12.0.0"}])
def test_elsewhere_committed_accuracy_is_held_to_the_threshold_instead(repo, change):
    _runtime(repo)
    commit(repo, "committed run with its runtime")
    _metrics(repo, 0.99, 0.98, best_epoch=8)
    _runtime(repo, **change)
    proc = gate(repo, "--exact")
    assert proc.returncode == 0, proc.stderr
    key = next(iter(change))
    assert "gate: note: not the committed run's machine or software" in proc.stdout and key in proc.stdout
    assert "val/test accuracy reproduced within 0.01" in proc.stdout and "reproduced exactly" not in proc.stdout
    _metrics(repo, 0.99, 0.95, best_epoch=8)  # and a real drop still fails there
    proc = gate(repo, "--exact")
    assert (
        proc.returncode == 1
        and "HEAD's committed test.accuracy 0.9800 is not reproduced: this run gives 0.9500" in proc.stderr
    )


def test_inflated_committed_accuracy_from_another_machine_fails(repo):
    run(["git", "tag", "baseline"], repo)
    _metrics(repo, 0.99, 1.0)
    _runtime(repo, device_name="someone's laptop")  # committed from elsewhere, better than it reproduces
    commit(repo, "inflated metrics")
    _metrics(repo, 0.99, 0.98)
    _runtime(repo)
    proc = gate(repo, "--exact", base="baseline")  # nothing dropped against the base...
    assert proc.returncode == 1  # ... but HEAD's figures are not what its code gives
    assert "HEAD's committed test.accuracy 1.0000 is not reproduced: this run gives 0.9800" in proc.stderr


def test_without_runtime_figures_the_exact_check_stays_strict(repo):
    _metrics(repo, 0.99, 0.98, best_epoch=8)
    _runtime(repo, torch_threads=16)  # the committed run has no fingerprint to compare machines with
    proc = gate(repo, "--exact")
    assert proc.returncode == 1 and "metrics/train.json does not reproduce" in proc.stderr


def test_gate_without_a_committed_baseline_is_one_clear_error(tmp_path):
    repo = make_project(tmp_path / "repo", {"source": "unused.zip"}, git=True)
    proc = gate(repo)
    assert proc.returncode == 2 and proc.stderr.startswith("error: no metrics/eval.json committed at 'HEAD'")


def test_exact_checks_heads_figures_while_the_drop_is_measured_against_the_base(repo):
    run(["git", "tag", "baseline"], repo)
    _metrics(repo, 0.99, 0.90)  # a change that lowers test accuracy, committed with its own (reproduced) metrics
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["ci"]["max_accuracy_drop"] = 0.5  # ... and loosens the gate in the same commit
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    commit(repo, "worse model, new metrics committed")
    assert gate(repo, "--exact").returncode == 0  # against HEAD: nothing dropped, everything reproduced
    proc = gate(repo, "--exact", base="baseline")
    assert proc.returncode == 1  # the base's threshold (0.01) applies, not the change's own
    assert "test.accuracy dropped by 0.0800" in proc.stderr and "does not reproduce" not in proc.stderr


@pytest.mark.parametrize("value", ["-0.1", "1.5", "nan"])
def test_max_drop_override_must_be_a_fraction(repo, value):
    proc = gate(repo, "--max-drop", value)
    assert proc.returncode == 2 and "is not a fraction in [0, 1]" in proc.stderr


def test_unknown_base_is_one_clear_error(repo):
    proc = gate(repo, base="no-such-branch")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "error: git revision 'no-such-branch' not found; pass --base with a branch, tag or commit"
    )


def test_reproducing_gate_on_a_clean_clone_passes_then_catches_forgery_and_regression(tmp_path):
    """The CI gate end to end on generated data: commit a real run's metrics and dvc.lock, clone, reproduce."""
    colour_dataset(tmp_path / "source", classes=3, per_class=30)
    repo = make_project(tmp_path / "repo", {"source": "../source"}, overrides=TINY, git=True)
    dvc = str(Path(sys.executable).with_name("dvc"))
    run([dvc, "repro"], repo)
    commit(repo, "baseline run")
    assert json.loads((repo / "metrics/eval.json").read_text())["test"]["accuracy"] >= 0.8

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    proc = gate(clone, "--reproduce", "--exact")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in ("download", "split", "train", "evaluate", "export"):  # nothing taken on trust from the commit
        assert f"Running stage '{name}'" in proc.stdout
    assert "dvc metrics diff HEAD: no quality metric changed" in proc.stdout
    assert "HEAD's committed run reproduced exactly" in proc.stdout and "gate: note:" not in proc.stdout
    changed = {line[3:] for line in run(["git", "status", "--porcelain"], clone).stdout.splitlines()}
    assert changed <= {"metrics/runtime.json", "dvc.lock"}  # everything else reproduced to the byte

    # Metrics edited by hand and recorded with `dvc commit`: dvc.lock agrees with them, the reproduction does not.
    run(["git", "checkout", "-q", "--", "."], clone)
    forged = json.loads((clone / "metrics/eval.json").read_text())
    forged["test"]["macro_f1"] = 0.123
    (clone / "metrics/eval.json").write_text(json.dumps(forged))
    run([dvc, "commit", "-f", "evaluate"], clone)
    commit(clone, "forged metrics")
    proc = gate(clone, "--reproduce", "--exact")
    assert proc.returncode == 1
    assert "metrics/eval.json does not reproduce the committed figures: test.macro_f1" in proc.stderr
    assert "dvc.lock: outputs differ from the committed run: evaluate:metrics/eval.json" in proc.stderr

    # A change that cannot move any figure, committed without re-running: dvc.lock is stale all the same.
    run(["git", "reset", "-q", "--hard", "HEAD~1"], clone)
    params = yaml.safe_load((clone / "params.yaml").read_text())
    params["evaluate"]["batch_size"] = 7
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    commit(clone, "smaller eval batches")
    proc = gate(clone, "--reproduce", "--exact")
    assert proc.returncode == 1
    assert (
        "dvc.lock at HEAD records other code or params than HEAD's own (was a run committed after the last "
        "change?): evaluate:params.yaml:evaluate.batch_size" in proc.stderr
    )
    assert "does not reproduce" not in proc.stderr  # the figures themselves are the same

    # A change that ruins training, committed without re-running: the reproduction exposes it.
    run(["git", "reset", "-q", "--hard", "HEAD~1"], clone)
    params = yaml.safe_load((clone / "params.yaml").read_text())
    params["lr"] = 1e-7
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    commit(clone, "lr typo")
    proc = gate(clone, "--reproduce", "--exact")
    assert proc.returncode == 1
    assert "accuracy dropped by" in proc.stderr and "metrics/eval.json does not reproduce" in proc.stderr
