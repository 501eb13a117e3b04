"""DVC experiments on the real pipeline (small generated data): a queued sweep run from temporary copies."""

import json
import shutil

import pytest
import yaml

from conftest import REPO, TINY, VENV_BIN, colour_dataset, dvc, make_project, run

pytestmark = pytest.mark.slow


def test_queued_sweep_runs_in_temp_copies_and_is_listed(tmp_path):
    colour_dataset(tmp_path / "source", classes=2, per_class=12)
    # A relative source, as a user writes it: queued runs execute under .dvc/tmp/exps/, where it only resolves
    # against the project root DVC passes in $DVC_ROOT.
    repo = make_project(tmp_path / "repo", {"source": "../source"}, overrides=TINY, git=True)
    dvc(repo, "exp", "run", "--queue", "-S", "lr=0.01,0.02")
    dvc(repo, "exp", "run", "--run-all", "-j", "1")
    shown = json.loads(dvc(repo, "exp", "show", "--json").stdout)
    exps = [e for rev in shown for e in (rev.get("experiments") or [])]
    lrs = sorted(float(e["revs"][0]["data"]["params"]["params.yaml"]["data"]["lr"]) for e in exps)
    assert lrs == [0.01, 0.02]
    for e in exps:
        metrics = e["revs"][0]["data"]["metrics"]["metrics/eval.json"]["data"]
        assert 0 <= metrics["test"]["accuracy"] <= 1
    table = dvc(repo, "exp", "show", "--md", "--only-changed").stdout
    assert "0.01" in table and "0.02" in table
    shutil.rmtree(repo / ".dvc" / "tmp", ignore_errors=True)


def test_make_repro_source_says_it_changed_params_yaml_and_the_way_back_works(tmp_path):
    """`make repro SOURCE=...` runs the pipeline on other data in the workspace, and says plainly that
    params.yaml changed and how to return; following that line restores the shipped default and its run."""
    colour_dataset(tmp_path / "photos", classes=2, per_class=12)
    repo = make_project(tmp_path / "repo", overrides=TINY, git=True)
    shutil.copy2(REPO / "Makefile", repo / "Makefile")
    venv = VENV_BIN.parent  # the test's own environment; -o keeps make from reinstalling it
    make = ["make", "--no-print-directory", f"VENV={venv}", "-o", f"{venv}/.installed", "repro"]
    run(make, repo)  # the committed baseline on the shipped data, as a clone of main has it
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "baseline run"], repo)
    committed = {p: (repo / p).read_bytes() for p in ("params.yaml", "data/provenance.json", "metrics/eval.json")}

    proc = run([*make, "SOURCE=../photos"], repo)
    assert "Running stage 'train'" in proc.stdout
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["data"]["source"] == "../photos" and params["data"]["sha256"] is None
    said = [line for line in proc.stdout.splitlines() if line.startswith("make repro:")]
    assert said[0].startswith("make repro: params.yaml now names data.source ../photos"), said
    back = said[1].split("back to the shipped data: ", 1)[1]
    run(["sh", "-c", back.replace("make repro", " ".join(make))], repo)
    assert {p: (repo / p).read_bytes() for p in committed} == committed
    changed = {line[3:] for line in run(["git", "status", "--porcelain"], repo).stdout.splitlines()}
    assert changed <= {"metrics/runtime.json", "dvc.lock"}  # the timings of a re-run, nothing else
