"""tools/slurm/ on a real SLURM cluster: two slurmd on this machine (tests/helpers/slurm.py). The training job
runs the pipeline across both nodes to the weights and metrics of the same world size on one node; requeued
mid-training, as a preempted job is, it resumes and ends with the bytes of an uninterrupted job. The sweep job
runs one experiment per array task and brings each back to the repository it was submitted from."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from conftest import REQUIRED_IN_CI, SUBPROCESS_ENV, TINY, VENV_BIN, colour_dataset, dvc, make_project
from helpers.servers import free_port
from helpers.slurm import FINAL, MISSING_SLURM, NOT_ROOT, SlurmCluster

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(MISSING_SLURM is not None and not REQUIRED_IN_CI, reason=str(MISSING_SLURM)),
    pytest.mark.skipif(NOT_ROOT is not None, reason=str(NOT_ROOT)),
]

TOOLS = Path(__file__).resolve().parents[1] / "tools/slurm"
JOB_ENV = {**SUBPROCESS_ENV, "PYTHONUNBUFFERED": "1"}  # sbatch adds it to the caller's environment
EPOCHS = 12
RECIPE = {**TINY, "epochs": EPOCHS, "model": {"image_size": 48, "num_channels": 24}}  # tests/test_resume.py's
ONE_NODE = {**RECIPE, "nproc": 2}  # world size 2 on one node: the reference
TWO_NODES = {**RECIPE, "nproc": 1, "dist": {"nnodes": 2, "rdzv_endpoint": ""}}  # the job's: node 0 at $MASTER_ADDR
# what says where it ran or how fast: runtime.json (timings), and the params that best.pt and the card repeat
ONE_RUN_ONLY = {"metrics/runtime.json", "models/best.pt", "models/model.json"}


@pytest.fixture(scope="module")
def slurm() -> Iterator[SlurmCluster]:
    assert MISSING_SLURM is None, MISSING_SLURM
    cluster = SlurmCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return colour_dataset(tmp_path_factory.mktemp("source") / "images", per_class=60, size=48)


@pytest.fixture(scope="module")
def two_node_job(slurm, source, tmp_path_factory) -> tuple[Path, str, dict, float]:
    """One uninterrupted job on both nodes, the run the requeued one must equal: its project, its output, its
    `scontrol show job` record and its seconds from sbatch to COMPLETED."""
    project = make_project(
        tmp_path_factory.mktemp("job") / "project", {"source": str(source)}, overrides=TWO_NODES, git=True
    )
    output = project.parent / "job.out"
    started = time.perf_counter()
    [info] = slurm.wait_job(submit(slurm, project, output), output=output)
    return project, output.read_text(), info, time.perf_counter() - started


def submit(slurm: SlurmCluster, project: Path, output: Path) -> int:
    """tools/slurm/train.sbatch submitted from ``project``, a clone with its .venv as the script expects."""
    (project / ".venv").symlink_to(VENV_BIN.parent)
    env = {
        **JOB_ENV,
        "MASTER_PORT": str(free_port()),
        # the two nodes share this machine's cores as two processes on one node do (distributed.relaunch)
        "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // 2)),
    }
    return slurm.sbatch(f"--chdir={project}", f"--output={output}", str(TOOLS / "train.sbatch"), env=env)


def outputs(project: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(project)): p.read_bytes()
        for d in ("models", "metrics")
        for p in (project / d).rglob("*")
        if p.is_file()
    }


def without_world(value):
    """``value`` without the params that say how many processes and nodes ran (nproc, dist)."""
    if isinstance(value, dict):
        return {k: without_world(v) for k, v in value.items() if k not in ("nproc", "dist")}
    return value


def test_the_job_trains_on_two_nodes_as_two_processes_train_on_one(two_node_job, source, tmp_path):
    project, log, info, took = two_node_job
    assert info["NumNodes"] == "2" and info["NodeList"] == "127.0.0.[1-2]" and info["Restarts"] == "0", info
    # one task per node (srun --label): node 0 `dvc repro`, node 1 the stage script, meeting at node 0
    assert "0: Running stage 'train'" in log and "1: Running stage" not in log, log
    for node in (0, 1):
        assert f"{node}: train: 2 processes" in log and f"--nnodes=2 --node-rank={node} --master-addr=127.0.0.1" in log
    assert re.search(r"^0: epoch +12/12", log, re.M) and not re.search(r"^1: epoch", log, re.M)  # rank 0 logs
    assert json.loads((project / "metrics/runtime.json").read_text())["world_size"] == 2
    assert dvc(project, "status", "--quiet", check=False).returncode == 0  # every stage recorded, up to date

    # the same world size on one node: `dvc repro` with two processes here
    one_node = make_project(tmp_path / "one-node", {"source": str(source)}, overrides=ONE_NODE, git=True)
    started = time.perf_counter()
    dvc(one_node, "repro")
    local = time.perf_counter() - started
    job, here = outputs(project), outputs(one_node)
    assert job.keys() == here.keys()
    for path in job.keys() - ONE_RUN_ONLY:
        assert job[path] == here[path], path
    # best.pt and the card differ by the params nproc and dist alone: the weights are the same numbers
    a, b = (torch.load(p / "models/best.pt", weights_only=True) for p in (project, one_node))
    assert a.keys() == b.keys() and without_world(a["params"]) == without_world(b["params"])
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert {k: v for k, v in a.items() if k not in ("state_dict", "params")} == {
        k: v for k, v in b.items() if k not in ("state_dict", "params")
    }
    card = {p: without_world(json.loads((p / "models/model.json").read_text())) for p in (project, one_node)}
    assert card[project] == card[one_node]
    print(f"\ntwo-node job {took:.1f} s from sbatch to COMPLETED, the one-node dvc repro {local:.1f} s; output:\n{log}")


def test_a_requeued_job_resumes_to_the_bytes_of_an_uninterrupted_run(slurm, two_node_job, source, tmp_path):
    uninterrupted = two_node_job[0]
    project = make_project(tmp_path / "project", {"source": str(source)}, overrides=TWO_NODES, git=True)
    output = tmp_path / "job.out"
    job = submit(slurm, project, output)
    # SLURM's warning before a time limit or a preemption, sent now: the job requeues itself
    slurm.wait_for("epoch 3 in the job's output", lambda: logged(slurm, job, output, r"^0: epoch +3/12 +train"), 300)
    signalled = time.perf_counter()
    slurm.run("scancel", "--signal=USR1", "--batch", str(job))
    [info] = slurm.wait_job(job, output=output)
    took = time.perf_counter() - signalled
    log = output.read_text()
    assert info["Restarts"] == "1", info
    first, again = re.split(r"^train\.sbatch: job \d+, run 1, on 127\.0\.0\.\[1-2\]", log, flags=re.M)
    assert "train.sbatch: USR1: requeueing" in first and "DUE TO JOB REQUEUE" in first, log
    resumed = re.search(r"^0: train: resuming from models/.resume/train.pt after epoch (\d+) of 12", again, re.M)
    assert resumed and 2 <= int(resumed[1]) < EPOCHS, log  # the signal came after epoch 3's line, before the end
    assert len(re.findall(r"^0: epoch ", again, re.M)) == EPOCHS - int(resumed[1])  # only the lost ones again
    assert not (project / "models/.resume").exists()
    job_outputs, straight = outputs(project), outputs(uninterrupted)
    assert job_outputs.keys() == straight.keys()
    for path in job_outputs.keys() - {"metrics/runtime.json"}:
        assert job_outputs[path] == straight[path], path
    assert dvc(project, "status", "--quiet", check=False).returncode == 0
    print(f"\nUSR1 after epoch 3: resumed after epoch {resumed[1]}, COMPLETED {took:.1f} s later; output:\n{log}")


def test_a_sweep_runs_one_experiment_per_array_task_and_lists_them_where_it_was_submitted(slurm, source, tmp_path):
    project = make_project(tmp_path / "project", {"source": str(source)}, overrides=TINY, git=True)
    (project / ".venv").symlink_to(VENV_BIN.parent)
    (tmp_path / "sweep.txt").write_text("lr=0.005\nlr=0.02 epochs=3\n")
    started = time.perf_counter()
    job = slurm.sbatch(
        "--array=0-1",
        f"--chdir={project}",
        f"--output={tmp_path}/%a.out",
        str(TOOLS / "sweep.sbatch"),
        str(tmp_path / "sweep.txt"),
        env=JOB_ENV,
    )
    records = slurm.wait_job(job, output=tmp_path / "0.out")
    took = time.perf_counter() - started
    assert sorted(r["ArrayTaskId"] for r in records) == ["0", "1"]
    shown = dvc(project, "exp", "show", "--no-pager", "--csv").stdout
    rows = {row["Experiment"]: row for row in csv.DictReader(io.StringIO(shown)) if row["Experiment"]}
    assert rows.keys() == {f"sweep-{job}-0", f"sweep-{job}-1"}, shown
    first, second = rows[f"sweep-{job}-0"], rows[f"sweep-{job}-1"]
    assert (first["lr"], first["epochs"]) == ("0.005", "2") and (second["lr"], second["epochs"]) == ("0.02", "3")
    accuracy = next(column for column in first if column.endswith("test.accuracy"))
    assert float(first[accuracy]) > 0 and float(second[accuracy]) > 0, shown  # each ran its whole pipeline
    dvc(project, "exp", "apply", f"sweep-{job}-1")  # its outputs come from the shared cache
    assert dvc(project, "status", "--quiet", check=False).returncode == 0
    assert json.loads((project / "metrics/train.json").read_text())["epochs_run"] == 3
    print(f"\na 2-task sweep {took:.1f} s from sbatch to COMPLETED; dvc exp show --csv where it was submitted:")
    print(shown)


def logged(slurm: SlurmCluster, job: int, output: Path, pattern: str) -> bool:
    """The job's output has a line that matches ``pattern``; fails at once if the job ended without one."""
    text = output.read_text() if output.exists() else ""
    if re.search(pattern, text, re.M):
        return True
    state = slurm.records(job)[0].get("JobState")
    assert state not in FINAL, f"job {job} ended {state} before a line matching {pattern!r}:\n{text}"
    return False
