"""The course's notebook (notebooks/curso.ipynb): in step with its plain-text twin, stripped of outputs,
covering the course's steps, run top to bottom by a real Jupyter kernel on a copy of the project, and served
by `make notebook`."""

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request

import nbformat
import pytest

from conftest import REPO, VENV_BIN, make_project, project_env, run
from helpers.servers import free_port, wait_for_port

NOTEBOOK = REPO / "notebooks/curso.ipynb"
TWIN = REPO / "notebooks/curso.py"
COLAB = "https://colab.research.google.com/github/OWNER/handsigns/blob/main/notebooks/curso.ipynb"


def cells(nb) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source) for c in nb.cells]


def test_notebook_and_its_text_twin_hold_the_same_cells_and_no_outputs():
    import jupytext  # here: importing it takes seconds, which every test worker would pay at collection

    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert cells(nb) == cells(jupytext.read(TWIN)), "out of step: run `jupytext --sync notebooks/curso.ipynb`"
    assert nb.metadata["jupytext"]["formats"] == "ipynb,py:percent"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code), "strip the outputs"


def test_notebook_walks_through_each_step_of_the_course():
    code = "\n".join(c.source for c in nbformat.read(NOTEBOOK, as_version=4).cells if c.cell_type == "code")
    steps = {
        "a tensor": "torch.tensor(",
        "the SIGNS images": "64x64_SIGNS.zip",
        "the index": "data/index/",
        "the leak report": "duplicates.csv",
        "the course's Dataset": "class SIGNSDataset(Dataset)",
        "the notes' Net": "Net(num_classes",
        "the default net": "build_net(",
        "training in the notebook": "fit(",
        "dvc repro": "dvc repro",
        "an experiment": "dvc exp run --queue -S lr=0.01",
        "the experiments table": "dvc exp show",
        "the plots": "dvc plots show",
        "the model card": "models/model.json",
        "the student's photo": "files.upload()",
        "the Predictor": "Predictor(",
        "the errors gallery": "misclassified_test.png",
    }
    missing = [step for step, needle in steps.items() if needle not in code]
    assert not missing, missing


def test_both_readmes_open_the_notebook_in_colab_and_locally():
    for readme in ("README.md", "README.es.md"):
        text = (REPO / readme).read_text()
        assert COLAB in text, readme
        assert "make notebook" in text, readme
    assert COLAB in NOTEBOOK.read_text()  # the badge on the notebook's first cell
    assert re.search(r"^notebook: \$\(STAMP\)", (REPO / "Makefile").read_text(), re.M)


@pytest.mark.slow
@pytest.mark.e2e
def test_notebook_runs_top_to_bottom_in_a_real_kernel(tmp_path):
    from nbclient import NotebookClient

    short = {"epochs": 1, "model": {"image_size": 32, "num_channels": 8}, "train": {"min_steps": 0}}  # seconds
    project = make_project(tmp_path / "project", overrides=short, git=True)
    shutil.copytree(REPO / "notebooks", project / "notebooks")
    run(["git", "add", "notebooks"], project)
    run(["git", "commit", "-qm", "the notebook"], project)
    nb = nbformat.read(project / "notebooks/curso.ipynb", as_version=4)
    # The kernel starts in notebooks/, as Jupyter starts it; CURSO_EPOCAS: the in-notebook training, shortened.
    client = NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(project / "notebooks")}}
    )
    try:
        client.execute(env=project_env(CURSO_EPOCAS="2"))
    finally:
        nbformat.write(nb, tmp_path / "executed.ipynb")  # to read after a failure
    out = {i: "".join(o.get("text", "") for o in c.outputs) for i, c in enumerate(nb.cells) if c.cell_type == "code"}
    text = "\n".join(out.values())
    figures = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    assert figures >= 5, figures  # a SIGNS photo, twelve of them, the curves, the student's photo, the gallery
    assert re.search(r"mejor precisión en val: [01]\.\d+ en la época [12]\b", text), text[-2000:]
    # `dvc exp show --md`: the experiment's row, lr 0.01, with its accuracies
    row = re.search(r"^\| └── \w+ \[[\w-]+\] +\| (0\.\d+|1) +\| (0\.\d+|1) +\| 0\.01 +\|$", text, re.M)
    assert row, text[-3000:]
    card = json.loads((project / "models/model.json").read_text())
    top = re.findall(r"^(\S+): \d+\.\d%$", text, re.M)
    assert len(top) == 3 and set(top) <= set(card["classes"]), top
    assert (project / "graficas/index.html").exists()


@pytest.mark.slow
def test_make_notebook_serves_the_notebook_and_its_twin_as_notebooks():
    """`make notebook` starts JupyterLab on the project with jupytext's contents manager: the .ipynb opens, and
    so does the plain-text twin, as a notebook (what pairs them when a student saves)."""
    port, token = free_port(), "handsigns-test"
    args = f"--no-browser --port {port} --ServerApp.token={token}"
    make = ["make", "--no-print-directory", f"VENV={VENV_BIN.parent}", "-o", f"{VENV_BIN.parent}/.installed"]
    lab = subprocess.Popen(
        [*make, "notebook", f"NOTEBOOK_ARGS={args}"],
        cwd=REPO,
        env=project_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        wait_for_port(port, lab, timeout=60)
        for name in ("curso.ipynb", "curso.py"):
            url = f"http://127.0.0.1:{port}/api/contents/notebooks/{name}?token={token}"
            for _ in range(20):  # the port opens a moment before the contents API answers
                try:
                    with urllib.request.urlopen(url, timeout=30) as response:
                        model = json.load(response)
                    break
                except ConnectionError:
                    time.sleep(0.5)
            assert model["type"] == "notebook", (name, model["type"])
            assert model["content"]["cells"][0]["source"].startswith("# Del cuaderno del curso al pipeline")
    finally:
        os.killpg(lab.pid, signal.SIGTERM)
        lab.wait(timeout=30)
