"""Several processes, one run: PyTorch's own engine (``torchrun`` + DistributedDataParallel), not a home-made one.

With ``nproc`` (processes per node) times ``dist.nnodes`` above 1, the train stage re-runs itself under
``python -m torch.distributed.run``: ``--standalone`` on one node; across nodes, each node's rank meets node 0
at ``dist.rdzv_endpoint`` (docs/scaling.md). Each process is one rank: NCCL with one GPU per process on CUDA,
gloo on the CPU. ``batch_size`` stays the global batch (each rank takes ``batch_size / world size``), the order
comes from a seeded DistributedSampler with ``set_epoch``, and rank 0 alone writes files.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from handsigns.errors import UserError


@dataclass(frozen=True)
class World:
    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes checkpoints, metrics, curves and logs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def say(self, line: str) -> None:
        """Print ``line`` from rank 0 only: one log, however many processes."""
        if self.main:
            print(line, flush=True)


def current() -> World:
    """This process's place in the run, from the variables torchrun sets (one process when unset)."""
    env = os.environ
    return World(int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0)), int(env.get("WORLD_SIZE", 1)))


def node_rank() -> int:
    """This node's place among ``dist.nnodes``: ``$NODE_RANK``, else SLURM's ``$SLURM_NODEID``, else 0."""
    return int(os.environ.get("NODE_RANK") or os.environ.get("SLURM_NODEID") or 0)


def launch_command(nproc: int, nnodes: int, rdzv_endpoint: str, argv: list[str]) -> list[str]:
    """The torchrun command line that runs ``argv`` (a script and its arguments) as ``nproc`` x ``nnodes``.

    Several nodes meet at node 0 (``dist.rdzv_endpoint``, else ``$MASTER_ADDR:$MASTER_PORT``) and each takes
    its rank from :func:`node_rank`, so node 0 holds rank 0: the process that writes the outputs, under the
    `dvc repro` that runs there."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}"]
    if nnodes == 1:
        return [*cmd, "--standalone", *argv]
    endpoint = rdzv_endpoint or (
        f"{os.environ['MASTER_ADDR']}:{os.environ.get('MASTER_PORT', '29500')}" if "MASTER_ADDR" in os.environ else ""
    )
    host, _, port = endpoint.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(
            f"params.yaml: dist.nnodes = {nnodes} needs dist.rdzv_endpoint = host:port of node 0, which every node "
            f"reaches (or $MASTER_ADDR and $MASTER_PORT); got {endpoint!r}"
        )
    rank = node_rank()
    if not 0 <= rank < nnodes:
        raise UserError(f"this node's rank {rank} ($NODE_RANK or $SLURM_NODEID) is not in 0..{nnodes - 1}")
    where = [f"--nnodes={nnodes}", f"--node-rank={rank}", f"--master-addr={host}", f"--master-port={port}"]
    return [*cmd, *where, *argv]


def relaunch(nproc: int, nnodes: int, rdzv_endpoint: str) -> int | None:
    """Run this script again under torchrun when the run wants several processes and is not one of them yet;
    its exit code. None: go on in this process (one process, or already a torchrun worker)."""
    if nproc * nnodes == 1 or "LOCAL_RANK" in os.environ:
        return None
    cmd = launch_command(nproc, nnodes, rdzv_endpoint, sys.argv)
    # The node's cores shared out (torchrun's own default is 1 thread each, with a banner saying so)
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // nproc))
    print(f"train: {nproc * nnodes} processes, {threads} threads each: {' '.join(cmd[1:])}", flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": threads}
    return subprocess.run(cmd, check=False, env=env, preexec_fn=die_with_parent).returncode


def die_with_parent() -> None:
    """Have the kernel SIGKILL this process when its parent dies (Linux; elsewhere nothing). torchrun puts its
    workers in their own session, so a ``kill -9`` of the run (``dvc repro`` and what it started) would
    otherwise leave them training, and writing, beside the re-run that resumes. Each link of the chain
    (stage -> torchrun -> worker) is tied this way."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the line above: nothing would signal us
        os._exit(1)


def setup(world: World, device: torch.device) -> None:
    if world.distributed and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def finish() -> None:
    """Wait until every rank has finished its work, so that none closes its connections while another still
    uses them (gloo's threads abort the process when a peer leaves mid-operation). Only on success: after an
    error the other ranks may never get here."""
    if dist.is_initialized():
        dist.barrier()


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """``values`` summed over the ranks (float64: counts stay exact)."""
    if not dist.is_initialized():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (one process: ``obj``)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (one process: ``[obj]``)."""
    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def sync_buffers(module: torch.nn.Module) -> None:
    """Rank 0's buffers (batch-norm running statistics) on every rank, so all ranks score val alike."""
    if dist.is_initialized():
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def shard(n: int, world: World) -> slice:
    """Rank ``r``'s share of ``n`` items for scoring: every ``size``-th from ``r``, none padded or repeated."""
    return slice(world.rank, n, world.size)


def epoch_order(n: int, epoch: int, seed: int, world: World) -> torch.Tensor:
    """This rank's sample order for ``epoch``: a seeded DistributedSampler (padded to equal shares)."""
    from torch.utils.data.distributed import DistributedSampler

    sampler: DistributedSampler[int] = DistributedSampler(
        range(n),  # type: ignore[arg-type]  # typed as a Dataset; the sampler reads only its len()
        num_replicas=world.size,
        rank=world.rank,
        shuffle=True,
        seed=seed,
    )
    sampler.set_epoch(epoch)
    return torch.tensor(list(sampler), dtype=torch.int64)
