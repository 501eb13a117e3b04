"""Several processes: torchrun + DDP through the real `dvc repro` (gloo on the CPU), the sampler's shards, the
launch command, and one GPU per queued experiment (with a faked device count: no GPU here)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from handsigns import distributed, runtime
from handsigns.distributed import World
from handsigns.errors import UserError
from handsigns.params.recipe import RecipeParams

from conftest import TINY, colour_dataset, dvc, make_project, project_env
from helpers.servers import free_port

# ------------------------------------------------------------------------------------------------ fast


def test_the_ranks_orders_cover_every_sample_once_per_epoch_and_change_with_the_epoch():
    n = 23
    for size in (2, 3):
        shares = [distributed.epoch_order(n, 1, 0, World(r, r, size)) for r in range(size)]
        assert len({len(s) for s in shares}) == 1  # equal shares: every rank takes the same number of steps
        flat = torch.cat(shares).tolist()
        assert set(flat) == set(range(n)) and len(flat) - n < size  # all of them; padding only to even out
    a = distributed.epoch_order(n, 1, 0, World(0, 0, 2))
    assert torch.equal(a, distributed.epoch_order(n, 1, 0, World(0, 0, 2)))  # seeded
    assert not torch.equal(a, distributed.epoch_order(n, 2, 0, World(0, 0, 2)))  # set_epoch reshuffles


def test_val_shards_count_every_image_once():
    shards = [i for r in range(3) for i in list(range(10))[distributed.shard(10, World(r, r, 3))]]
    assert sorted(shards) == list(range(10))


def test_the_launch_command(monkeypatch):
    for var in ("NODE_RANK", "SLURM_NODEID", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    one = distributed.launch_command(4, 1, "", ["stages/train.py"])
    assert one[1:] == ["-m", "torch.distributed.run", "--nproc-per-node=4", "--standalone", "stages/train.py"]
    with pytest.raises(UserError, match=r"dist\.nnodes = 2 needs dist\.rdzv_endpoint = host:port of node 0"):
        distributed.launch_command(8, 2, "", ["stages/train.py"])
    head = ["--nnodes=2", "--node-rank=0", "--master-addr=node1", "--master-port=29500"]
    assert distributed.launch_command(8, 2, "node1:29500", ["t.py"])[4:] == [*head, "t.py"]
    monkeypatch.setenv("SLURM_NODEID", "1")  # the second node of a SLURM job
    monkeypatch.setenv("MASTER_ADDR", "node1")
    assert "--node-rank=1" in distributed.launch_command(8, 2, "", ["t.py"])
    monkeypatch.setenv("NODE_RANK", "2")
    with pytest.raises(UserError, match=r"this node's rank 2 .* is not in 0\.\.1"):
        distributed.launch_command(8, 2, "node1:29500", ["t.py"])


def test_the_global_batch_must_split_evenly_over_the_processes():
    assert RecipeParams(batch_size=32, nproc=4).world_size == 4
    with pytest.raises(UserError, match="batch_size = 32 does not split evenly over 3 processes"):
        RecipeParams(batch_size=32, nproc=3)


CLAIM = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from handsigns.gpus import claim_gpu
    print(claim_gpu(int(sys.argv[1]), Path(sys.argv[2])), flush=True)
    while not Path(sys.argv[3]).exists():  # hold the GPU until the test says so: no race with start-up time
        time.sleep(0.05)
""")


def test_concurrent_runs_each_claim_their_own_gpu_and_a_run_past_the_count_waits(tmp_path):
    """What `dvc queue start -j 3` does on 3 GPUs: three processes at once, each on another GPU; a fourth waits
    until one of them exits, then takes its GPU."""
    locks, release, at_once = tmp_path / "locks", tmp_path / "release", tmp_path / "at-once"
    at_once.touch()
    start = lambda until: subprocess.Popen(  # noqa: E731
        [sys.executable, "-c", CLAIM, "3", str(locks), str(until)], stdout=subprocess.PIPE, text=True
    )
    holders = [start(release) for _ in range(3)]
    claimed = sorted(int(p.stdout.readline()) for p in holders)
    assert claimed == [0, 1, 2]
    fourth = start(at_once)
    waiting = fourth.stdout.readline()  # said while every holder still holds its GPU
    assert waiting.startswith("train: all 3 GPUs are held by other runs; waiting for cuda:"), waiting
    assert fourth.poll() is None  # and blocked there
    release.touch()
    got = fourth.stdout.read()
    assert fourth.wait(timeout=60) == 0
    assert int(got) == int(waiting.split(":")[-1]) and int(got) in claimed  # the GPU it waited for
    for p in holders:
        p.wait(timeout=60)


def test_auto_device_on_a_machine_with_several_gpus(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(runtime, "claim_gpu", lambda count: 2 if count == 4 else -1)
    assert runtime.resolve_device("auto") == torch.device("cuda", 2)  # one process: the GPU it claimed
    assert runtime.resolve_device("auto", local_rank=3) == torch.device("cuda", 3)  # torchrun: its local rank
    assert runtime.resolve_device("cuda", local_rank=1) == torch.device("cuda", 1)
    assert runtime.resolve_device("cuda:0") == torch.device("cuda", 0)  # named: as named


# ------------------------------------------------------------------------------------------------ slow

DDP = {**TINY, "epochs": 6, "batch_size": 16}


@pytest.mark.slow
def test_two_gloo_processes_through_dvc_repro_train_a_model_single_process_evaluation_loads(tmp_path):
    source = colour_dataset(tmp_path / "source", per_class=40, size=24)
    single = make_project(tmp_path / "single", {"source": str(source)}, overrides=DDP, git=True)
    double = make_project(tmp_path / "double", {"source": str(source)}, overrides={**DDP, "nproc": 2}, git=True)
    dvc(single, "repro")
    out = dvc(double, "repro").stdout
    assert "train: 2 processes" in out and "on each of 2 processes" in out
    assert out.count("epoch   1/") == 1  # rank 0 alone logs
    runtime_2 = json.loads((double / "metrics/runtime.json").read_text())
    assert runtime_2["world_size"] == 2
    # evaluate (one process) loaded the checkpoint rank 0 wrote; accuracy close to one process's
    acc = {p.name: json.loads((p / "metrics/eval.json").read_text())["test"]["accuracy"] for p in (single, double)}
    assert acc["double"] >= 0.9 and abs(acc["double"] - acc["single"]) <= 0.1, acc
    curves = (double / "metrics/train/plots/metrics/val/accuracy.tsv").read_text().splitlines()
    assert len(curves) == 1 + DDP["epochs"]  # one writer: one row per epoch
    print(f"\ntest accuracy: one process {acc['single']:.4f}, two processes {acc['double']:.4f}")


@pytest.mark.slow
def test_two_nodes_meet_at_node_0_and_node_0_writes(tmp_path):
    """Two "nodes" on this machine, one process each: node 0 runs `dvc repro`, node 1 the stage script in its own
    checkout (the same commit and data), as docs/scaling.md says; they meet at 127.0.0.1."""
    port = free_port()
    source = colour_dataset(tmp_path / "source", per_class=40, size=24)
    overrides = {**DDP, "dist": {"nnodes": 2, "rdzv_endpoint": f"127.0.0.1:{port}"}}
    node0 = make_project(tmp_path / "node0", {"source": str(source)}, overrides=overrides, git=True)
    node1 = make_project(tmp_path / "node1", {"source": str(source)}, overrides=overrides, git=True)
    dvc(node1, "repro", "split")
    # node 1's train stage runs alongside node 0's `dvc repro` (so not through run_stage, which waits)
    second = subprocess.Popen(
        [sys.executable, "stages/train.py"],
        cwd=node1,
        env=project_env(NODE_RANK="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    first = dvc(node0, "repro", check=False, timeout=600, env={"NODE_RANK": "0"})
    out1 = second.communicate(timeout=120)[0]
    assert first.returncode == 0 and second.returncode == 0, (first.stdout, first.stderr, out1)
    assert "--nnodes=2 --node-rank=0" in first.stdout and "--node-rank=1" in out1
    assert json.loads((node0 / "metrics/runtime.json").read_text())["world_size"] == 2
    assert not (node1 / "models/best.pt").exists() and "epoch" not in out1  # rank 1 neither writes nor logs
    assert json.loads((node0 / "metrics/eval.json").read_text())["test"]["accuracy"] >= 0.9
