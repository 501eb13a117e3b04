"""`dvc repro` of the whole pipeline on the real SIGNS data, then `dvc exp run -S lr=...`.

On the data the project ships (params.yaml's default source, pinned by sha256). Uses few epochs: this checks
the wiring, not the accuracy (the README reports the accuracy of the default params, with the command that measures it).
"""

import json
import shlex
import shutil
import sys

import pandas as pd
import pytest

from conftest import REPO, dvc, make_project, outlier_folder, run

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FEW_EPOCHS = {"epochs": 3, "train": {"min_steps": 0}}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    proj = make_project(tmp_path_factory.mktemp("e2e") / "repo", overrides=FEW_EPOCHS, git=True)
    dvc(proj, "repro")
    return proj


def test_repro_produces_metrics_plots_and_a_verified_model(repo):
    eval_metrics = json.loads((repo / "metrics/eval.json").read_text())
    assert eval_metrics["test"]["accuracy"] > 0.5  # 3 epochs: far above chance (1/6), far from converged
    assert len(pd.read_csv(repo / "metrics/eval/predictions_test.csv")) == 120
    assert pd.read_csv(repo / "metrics/eval/per_class_test.csv")["support"].tolist() == [20] * 6
    for rel in (
        "models/model.onnx",
        "models/model.safetensors",
        "models/model.json",
        "metrics/train.json",
        "metrics/runtime.json",
        "metrics/fingerprint.json",
        "metrics/data/split.json",
        "metrics/eval/misclassified_test.png",
    ):
        assert (repo / rel).exists(), rel
    card = json.loads((repo / "models/model.json").read_text())
    assert card["export_check"]["images"] == 120 and card["export_check"]["labels_equal"] == 120
    plots = dvc(repo, "plots", "show", "--json").stdout
    for title in ("Confusion matrix (test)", "Loss per epoch", "Per-class F1 (test)"):
        assert title in plots, title


def test_dvc_shows_the_headline_figures_only(repo):
    """`dvc exp show` / `dvc metrics diff` get one readable row: the headline figures and the machine's names."""
    shown = json.loads(dvc(repo, "metrics", "show", "--json").stdout)
    files = shown[""]["data"] if "" in shown else next(iter(shown.values()))["data"]

    def leaves(obj, prefix=""):
        if isinstance(obj, dict):
            return [k for key, v in obj.items() for k in leaves(v, f"{prefix}{key}.")]
        return [prefix[:-1]] if isinstance(obj, int | float) else [f"{prefix[:-1]} (not a number)"]

    columns = {f"{path}:{leaf}" for path, data in files.items() for leaf in leaves(data["data"])}
    assert columns == {
        "metrics/data.json:classes",
        "metrics/data.json:excluded",
        "metrics/data.json:images.train",
        "metrics/data.json:images.val",
        "metrics/data.json:images.test",
        "metrics/train.json:best_epoch",
        "metrics/train.json:epochs_run",
        "metrics/train.json:regularisation_strength",
        "metrics/runtime.json:train_seconds",
        "metrics/runtime.json:train_images_per_s",
        "metrics/runtime.json:world_size",
        *(f"metrics/runtime.json:{k} (not a number)" for k in ("device", "device_name", "precision")),
        *(f"metrics/eval.json:{s}.{k}" for s in ("val", "test") for k in ("accuracy", "macro_f1", "loss", "ece")),
        *(f"metrics/eval.json:ood.{k}" for k in ("test_flagged", "auroc", "caught")),
    }


def test_make_exps_is_readable_and_names_the_machine(repo):
    """`make exps`: the headline, the params that differ and the machine, at most ~25 columns (its arguments are
    read from the Makefile, so the test holds what users run)."""
    recipe = (REPO / "Makefile").read_text().split("\nexps:", 1)[1].split("\n\n", 1)[0]
    args = shlex.split(recipe.replace("\\\n", " ").replace("$$", "$").split("dvc exp show", 1)[1])
    args = [a for a in args if not a.startswith("$(")]
    header = dvc(repo, "exp", "show", *args, "--csv").stdout.splitlines()[0].split(",")
    shown = [c for c in header if c not in ("rev", "typ", "parent")]  # --csv's own bookkeeping columns
    assert {"test.accuracy", "val.accuracy", "device", "device_name", "precision"} <= set(shown)
    assert len(shown) <= 25 and not any("/" in c for c in shown), shown


def test_second_repro_runs_nothing(repo):
    out = dvc(repo, "repro").stdout
    assert "Running stage" not in out
    assert "didn't change" in out or "up to date" in out.lower()


def test_predict_labels_the_120_test_jpegs(repo):
    folder = next((repo / "data/raw").rglob("test_signs"))
    proc = run([sys.executable, "-m", "handsigns.cli", "predict", "--json", str(folder)], repo)
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(records) == 120
    assert {r["label"] for r in records} <= {"0", "1", "2", "3", "4", "5"}
    truth = pd.read_csv(repo / "metrics/eval/predictions_test.csv", dtype=str).set_index("path")["predicted"]
    by_name = {r["path"].split("data/raw/", 1)[1]: r["label"] for r in records}
    assert by_name == truth.to_dict()  # predict (onnxruntime) == evaluate (torch), image by image


def test_the_check_flags_few_signs_and_predict_flags_pictures_that_are_not_hands(repo, tmp_path):
    checked = json.loads((repo / "metrics/eval.json").read_text())["ood"]
    print(f"\nood check, 3 epochs: {checked}")
    assert checked["test_flagged"] <= 0.1 and checked["caught"] >= 0.9 and checked["auroc"] >= 0.95
    folder = outlier_folder(tmp_path / "not-hands", 64, 10)
    proc = run([sys.executable, "-m", "handsigns.cli", "predict", "--json", str(folder)], repo)
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(records) == 50 and sum(r["unsure"] for r in records) >= 45


def test_turning_the_check_off_reruns_evaluate_and_export_only_and_predict_says_so(repo, tmp_path):
    copy = tmp_path / "repo"
    shutil.copytree(repo, copy, symlinks=True)
    run(["git", "add", "-A"], copy)
    run(["git", "commit", "-qm", "baseline run"], copy)
    proc = dvc(copy, "exp", "run", "-S", "ood.check=false")
    ran = {s for s in ("download", "split", "train", "evaluate", "export") if f"Running stage '{s}'" in proc.stdout}
    assert ran == {"evaluate", "export"}, proc.stdout
    assert json.loads((copy / "metrics/eval/ood.json").read_text()) == {"check": False}
    assert "ood" not in json.loads((copy / "metrics/eval.json").read_text())
    assert json.loads((copy / "models/model.json").read_text())["ood"] is None
    photo = next((copy / "data/raw").rglob("test_signs/*.jpg"))
    proc = run([sys.executable, "-m", "handsigns.cli", "predict", str(photo)], copy)
    assert "has no out-of-distribution check" in proc.stderr and len(proc.stdout.split("\t")) == 3


def test_exp_run_lr_reruns_only_the_model_stages(repo):
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "baseline run"], repo)
    proc = dvc(repo, "exp", "run", "-S", "lr=0.01")
    ran = {s for s in ("download", "split", "train", "evaluate", "export") if f"Running stage '{s}'" in proc.stdout}
    assert ran == {"train", "evaluate", "export"}, proc.stdout
    assert "lr: 0.01" in (repo / "params.yaml").read_text()
