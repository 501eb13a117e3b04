"""End to end: `dvc repro split` on the real SIGNS zip in a throw-away copy of the project."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from conftest import dvc, make_project, run

pytestmark = pytest.mark.e2e

SIGNS_SHA256 = "c632a4c898bf11cc3703e614a87a60a90d65959d6bbcdf3e815129d8885cf170"


@pytest.fixture(scope="module")
def repro(tmp_path_factory):
    """The project copy (default params: the shipped SIGNS zip) after one `dvc repro split`, and its output."""
    project = make_project(tmp_path_factory.mktemp("e2e") / "project")
    run(["git", "init", "-q"], project)
    dvc(project, "init", "-q")
    first = dvc(project, "repro", "split")
    return project, first


def test_first_repro_runs_both_stages(repro):
    _, first = repro
    out = first.stdout + first.stderr
    assert "Running stage 'download'" in out and "Running stage 'split'" in out
    assert "download: 1200 files" in out


def test_index_of_the_real_data(repro):
    project, _ = repro
    index = project / "data" / "index"
    tables = {s: pd.read_csv(index / f"{s}.csv", dtype={"class": str}) for s in ("train", "val", "test")}
    assert len(tables["test"]) == 120
    assert (tables["test"]["class"].value_counts() == 20).all()
    test_shas = set(tables["test"].sha256)
    assert not test_shas & set(tables["train"].sha256)
    assert not test_shas & set(tables["val"].sha256)
    assert not set(tables["val"].sha256) & set(tables["train"].sha256)
    for split, df in tables.items():
        assert all(p.startswith(f"64x64_SIGNS/{split}_signs/") for p in df.path)
    assert tables["train"].sha256.is_unique and tables["val"].sha256.is_unique  # copies collapse to one
    assert json.loads((index / "classes.json").read_text())["classes"] == list("012345")

    kept = {s: len(t) for s, t in tables.items()}
    assert json.loads((project / "metrics" / "data.json").read_text()) == {
        "classes": 6,
        "images": kept,
        "excluded": 1200 - sum(kept.values()),
    }
    metrics = json.loads((project / "metrics" / "data" / "split.json").read_text())
    assert metrics["layout"] == "filename-labels" and metrics["classes"] == 6
    assert metrics["files_scanned"] == 1200
    assert metrics["cross_split_duplicates"]["test"] >= 15  # the 15 test twins docs/data.md names
    assert metrics["cross_split_duplicates"]["test_exact"] == 12  # as measured in datasets/README.md
    excluded = pd.read_csv(index / "excluded.csv")
    assert set(excluded.reason) <= {"duplicate"}
    assert sum(len(t) for t in tables.values()) + len(excluded) == 1200  # every file listed exactly once

    provenance = json.loads((project / "data" / "provenance.json").read_text())
    assert provenance["sha256"] == SIGNS_SHA256 and provenance["files"] == 1200


def test_second_repro_changes_nothing(repro):
    project, _ = repro
    before = {p.name: p.read_bytes() for p in (project / "data" / "index").iterdir()}
    second = dvc(project, "repro", "split")
    out = second.stdout + second.stderr
    assert "didn't change" in out or "up to date" in out, out
    assert "Running stage" not in out, out
    assert {p.name: p.read_bytes() for p in (project / "data" / "index").iterdir()} == before
