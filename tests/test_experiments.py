"""DVC experiments on the real pipeline (small generated data): a queued sweep run from temporary copies."""

import json
import shutil

import pytest

from conftest import TINY, VENV_BIN, colour_dataset, make_project, run

pytestmark = pytest.mark.slow


def test_queued_sweep_runs_in_temp_copies_and_is_listed(tmp_path):
    colour_dataset(tmp_path / "source", classes=2, per_class=12)
    # A relative source, as a user writes it: queued runs execute under .dvc/tmp/exps/, where it only resolves
    # against the project root DVC passes in $DVC_ROOT.
    repo = make_project(tmp_path / "repo", {"source": "../source"}, overrides=TINY, git=True)
    dvc = str(VENV_BIN / "dvc")
    run([dvc, "exp", "run", "--queue", "-S", "lr=0.01,0.02"], repo)
    run([dvc, "exp", "run", "--run-all", "-j", "1"], repo)
    shown = json.loads(run([dvc, "exp", "show", "--json"], repo).stdout)
    exps = [e for rev in shown for e in (rev.get("experiments") or [])]
    lrs = sorted(float(e["revs"][0]["data"]["params"]["params.yaml"]["data"]["lr"]) for e in exps)
    assert lrs == [0.01, 0.02]
    for e in exps:
        metrics = e["revs"][0]["data"]["metrics"]["metrics/eval.json"]["data"]
        assert 0 <= metrics["test"]["accuracy"] <= 1
    table = run([dvc, "exp", "show", "--md", "--only-changed"], repo).stdout
    assert "0.01" in table and "0.02" in table
    shutil.rmtree(repo / ".dvc" / "tmp", ignore_errors=True)
