"""`handsigns gate` end to end: the CLI on a real git + DVC project with a real committed run of the tiny recipe
(what `.ci/run` runs), on both sides of native bf16.

Slow (real `dvc repro`s); the rules themselves, in process: tests/test_gate_rules.py. Which side of bf16 a run
is on is forced through torch's two CPU probes (a sitecustomize on PYTHONPATH), as on a laptop without
AVX512-BF16/AMX and a Xeon with them, whatever this machine is.
"""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import TINY, colour_dataset, dvc, make_project, run

pytestmark = pytest.mark.slow

SITECUSTOMIZE = """
import os
if os.environ.get("FORCE_NATIVE_BF16") in ("0", "1"):
    # Patched when torch.cpu is first imported, not imported here: most processes of a run (dvc, download,
    # split) never load torch, and importing it in each would cost seconds.
    import importlib.util
    import sys

    answer = os.environ["FORCE_NATIVE_BF16"] == "1"

    class ForceBf16Probes:
        def find_spec(self, name, path=None, target=None):
            if name != "torch.cpu":
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(name)
            run_module = spec.loader.exec_module

            def exec_module(module):
                run_module(module)
                module._is_avx512_bf16_supported = module._is_amx_tile_supported = lambda: answer

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, ForceBf16Probes())
"""


def forced_bf16(site: Path, bf16: str) -> dict[str, str]:
    """The environment that makes every process see native bf16 ("1") or not ("0"): SITECUSTOMIZE in ``site``."""
    return {"FORCE_NATIVE_BF16": bf16, "PYTHONPATH": str(site)}


def gate(repo: Path, *args: str, base: str = "HEAD", bf16: str | None = None) -> subprocess.CompletedProcess:
    """``handsigns gate`` in ``repo``; ``bf16`` "1"/"0" forces torch's native-bf16 probes for every process."""
    env = forced_bf16(repo.parent / "site", bf16) if bf16 is not None else None
    cmd = [sys.executable, "-m", "handsigns.cli", "gate", "--base", base, *args]
    proc = run(cmd, repo, check=False, env=env)
    assert "Traceback" not in proc.stderr, proc.stderr  # exit 1 must mean "gate failed", never a crash
    return proc


def commit(repo: Path, message: str) -> None:
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", message], repo)


def set_params(repo: Path, **changes) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        node = params
        for p in parents:
            node = node[p]
        node[key] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def mislabel(repo: Path, n: int) -> None:
    """Make the workspace's run get ``n`` more held-out images wrong (its predictions, edited)."""
    for split in ("test", "val"):
        path = repo / f"metrics/eval/predictions_{split}.csv"
        rows = list(csv.DictReader(path.open()))
        for row in rows:
            if n and row["predicted"] == row["actual"]:
                row["predicted"], n = ("class_1" if row["actual"] == "class_0" else "class_0"), n - 1
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    assert n == 0


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A git + DVC project whose main commits a run of the tiny recipe, made with native bf16 (forced)."""
    root = tmp_path_factory.mktemp("gate")
    (root / "site").mkdir()
    (root / "site/sitecustomize.py").write_text(SITECUSTOMIZE)
    colour_dataset(root / "source", classes=3, per_class=40)
    repo = make_project(root / "repo", {"source": "../source"}, overrides=TINY, git=True)
    dvc(repo, "repro", "-q", env=forced_bf16(root / "site", "1"))
    assert json.loads((repo / "metrics/fingerprint.json").read_text())["precision"] == "bf16"
    commit(repo, "baseline run")
    run(["git", "branch", "-M", "main"], repo)
    return repo


@pytest.fixture
def clone(project, tmp_path) -> Path:
    """A clean clone of main, next to the forcing sitecustomize: no output but the committed files."""
    dest = project.parent / f"clone-{tmp_path.name}"
    run(["git", "clone", "-q", str(project), str(dest)], project.parent)
    for cmd in (["git", "config", "user.email", "t@example.invalid"], ["git", "config", "user.name", "t"]):
        run(cmd, dest)
    yield dest
    shutil.rmtree(dest, ignore_errors=True)


@pytest.fixture
def workspace(project, tmp_path) -> Path:
    """A copy of the project with its run in the workspace (outputs and cache): gate without --reproduce."""
    dest = project.parent / f"copy-{tmp_path.name}"
    shutil.copytree(project, dest, symlinks=True)
    yield dest
    shutil.rmtree(dest, ignore_errors=True)


@pytest.mark.parametrize("bf16", ["1", "0"], ids=["same-class", "no-native-bf16"])
def test_unchanged_main_passes_on_both_sides_of_bf16(clone, bf16):
    proc = gate(clone, "--reproduce", "--exact", base="origin/main", bf16=bf16)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in ("download", "split", "train", "evaluate", "export"):  # nothing taken on trust from the commit
        assert f"Running stage '{name}'" in proc.stdout
    if bf16 == "1":  # the committed run's class: byte for byte
        assert "dvc metrics diff origin/main: no quality metric changed" in proc.stdout
        assert "HEAD's committed run reproduced exactly" in proc.stdout and "gate: note:" not in proc.stdout
        changed = {line[3:] for line in run(["git", "status", "--porcelain"], clone).stdout.splitlines()}
        assert changed <= {"metrics/runtime.json", "dvc.lock"}  # everything else reproduced to the byte
    else:  # fp32: other last bits, held to the rule instead
        assert "gate: note: not the committed run's machine class (precision 'bf16' -> 'fp32'" in proc.stdout
        assert "HEAD's committed run within noise" in proc.stdout
        assert json.loads((clone / "metrics/fingerprint.json").read_text())["precision"] == "fp32"


def test_a_regression_branch_fails_on_another_machine_class(clone):
    """Across the bf16 line only the noise rule can catch the drop (the same class adds the exact check, which
    test_forged_metrics_recorded_with_dvc_commit_do_not_reproduce holds)."""
    set_params(clone, lr=1e-6)  # a change that ruins training, committed without re-running
    commit(clone, "lr typo")
    proc = gate(clone, "--reproduce", "--exact", base="origin/main", bf16="0")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "gate: FAIL: held-out accuracy against origin/main" in proc.stderr  # the drop, measured
    assert "train:params.yaml:lr" in proc.stderr  # and the stale dvc.lock


def test_an_unchanged_main_trained_by_two_processes_passes_without_native_bf16(project):
    """`nproc: 2` (torchrun, gloo): committed with native bf16, reproduced in fp32, held to the rule."""
    repo = project.parent / "two-processes"
    run(["git", "clone", "-q", str(project), str(repo)], project.parent)
    for cmd in (["git", "config", "user.email", "t@example.invalid"], ["git", "config", "user.name", "t"]):
        run(cmd, repo)
    set_params(repo, nproc=2)
    dvc(repo, "repro", "-q", env=forced_bf16(project.parent / "site", "1"))
    assert json.loads((repo / "metrics/runtime.json").read_text())["world_size"] == 2
    commit(repo, "two processes, run committed")
    proc = gate(repo, "--reproduce", "--exact", bf16="0")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "precision 'bf16' -> 'fp32'" in proc.stdout and "HEAD's committed run within noise" in proc.stdout


def test_forged_metrics_recorded_with_dvc_commit_do_not_reproduce(workspace):
    forged = json.loads((workspace / "metrics/eval.json").read_text())
    forged["test"]["macro_f1"] = 0.123
    (workspace / "metrics/eval.json").write_text(json.dumps(forged))
    card = json.loads((workspace / "models/model.json").read_text())  # and an output in DVC's cache
    (workspace / "models/model.json").write_text(json.dumps({**card, "forged": True}))
    dvc(workspace, "commit", "-f", "evaluate", "export")  # dvc.lock agrees with them; the run will not
    commit(workspace, "forged metrics")
    proc = gate(workspace, "--reproduce", "--exact", bf16="1")
    assert proc.returncode == 1
    assert "metrics/eval.json does not reproduce the committed figures: test.macro_f1" in proc.stderr
    assert "outputs differ from HEAD's committed run: metrics/eval.json, models/model.json" in proc.stderr


def test_a_change_committed_without_its_run_is_caught_before_reproducing(workspace):
    set_params(workspace, evaluate__batch_size=7)  # cannot move a figure, yet dvc.lock is stale
    commit(workspace, "smaller eval batches")
    proc = gate(workspace, "--exact")
    assert proc.returncode == 1
    assert (
        "dvc.lock at HEAD records other code, params or outputs than HEAD's own (was a run committed after the "
        "last change?): evaluate:params.yaml:evaluate.batch_size" in proc.stderr
    )


def test_a_drop_fails_only_beyond_noise(workspace):
    assert gate(workspace).returncode == 0
    mislabel(workspace, 2)  # 2 of ~36 held-out images: p = 0.25, what another seed can do
    proc = gate(workspace)
    assert proc.returncode == 0, proc.stderr
    assert "2 lost, 0 gained" in proc.stdout and "p = 0.25" in proc.stdout
    mislabel(workspace, 8)  # 10 lost: p = 0.001
    proc = gate(workspace)
    assert proc.returncode == 1 and "10 lost, 0 gained" in proc.stderr and "p = 0.00098" in proc.stderr


def test_the_base_sets_the_thresholds_not_the_change(workspace):
    run(["git", "tag", "baseline"], workspace)
    mislabel(workspace, 10)
    dvc(workspace, "commit", "-f", "evaluate")
    set_params(workspace, ci__max_accuracy_drop=0.9)  # a worse model that loosens its own gate
    commit(workspace, "worse model, its gate loosened")
    assert gate(workspace).returncode == 0  # against HEAD itself nothing dropped
    proc = gate(workspace, base="baseline")
    assert proc.returncode == 1 and "more than ci.max_accuracy_drop = 0.01" in proc.stderr


def test_committed_figures_from_elsewhere_are_held_to_the_rule_either_way(workspace):
    mislabel(workspace, 10)  # HEAD claims a run its code does not give, made on "someone's laptop"
    fingerprint = json.loads((workspace / "metrics/fingerprint.json").read_text())
    (workspace / "metrics/fingerprint.json").write_text(json.dumps({**fingerprint, "device_name": "laptop"}))
    dvc(workspace, "commit", "-f", "train", "evaluate")
    commit(workspace, "metrics from elsewhere")
    run(["git", "tag", "claimed"], workspace)
    proc = gate(workspace, "--reproduce", "--exact", base="claimed", bf16="1")
    assert proc.returncode == 1  # nothing dropped against the claim: it is better...
    assert "gate: note: not the committed run's machine class (device_name 'laptop' -> " in proc.stdout
    assert "HEAD's committed run is not reproduced on this machine" in proc.stderr  # ...but it is not HEAD's run


@pytest.mark.parametrize("value", ["-0.1", "1.5", "nan"])
def test_max_drop_override_must_be_a_fraction(workspace, value):
    proc = gate(workspace, "--max-drop", value)
    assert proc.returncode == 2 and "is not a fraction in [0, 1]" in proc.stderr


def test_unknown_base_is_one_clear_error(workspace):
    proc = gate(workspace, base="no-such-branch")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "error: git revision 'no-such-branch' not found; pass --base with a branch, tag or commit"
    )


def test_a_base_without_a_committed_run_is_one_clear_error(tmp_path):
    repo = make_project(tmp_path / "repo", {"source": "unused.zip"}, git=True)
    proc = gate(repo)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: no metrics/eval/predictions_val.csv committed at 'HEAD'")
