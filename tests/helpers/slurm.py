"""A real SLURM cluster on this machine, started by the tests and stopped after them: munged, slurmctld and two
slurmd (Debian's munge, slurmctld, slurmd and slurm-client; `.ci/run` installs them), all running as root.

Debian builds SLURM with several slurmd per host allowed, so each node is its own slurmd on its own port. The
nodes are named 127.0.0.1 and 127.0.0.2: `scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1`, the
MASTER_ADDR of tools/slurm/train.sbatch, then gives an address every process can reach (all of 127/8 is
loopback). Everything (munge key and socket, slurm.conf, state, spool, logs) lives in one temporary folder,
so nothing under /etc or /run is read or written and a system munge or SLURM is left alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from helpers.servers import free_ports

T = TypeVar("T")

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "scontrol", "scancel", "sinfo", "squeue")
# the daemons live in sbin, which is not on every user's PATH
BIN = {name: shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin") for name in DAEMONS + CLIENTS}
MISSING_SLURM = (
    None
    if all(BIN.values())
    else "no SLURM here (Debian: apt install slurmctld slurmd slurm-client munge; .ci/run installs them)"
)
# slurmd starts each job as the user who submitted it, which only root may do
NOT_ROOT = None if os.geteuid() == 0 else "the SLURM daemons run as root: the cluster tests need root"
NODES = ("127.0.0.1", "127.0.0.2")
PREFIX = "handsigns-slurm-"  # the cluster folders in the temp dir, found again by cleanup_stale
TAG = "HANDSIGNS_SLURM_TAG"  # set on every daemon, so that their leftovers can be found by environment
# every state a job can end in; a job in one of them never runs again
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}


class SlurmError(RuntimeError):
    pass


class SlurmCluster:
    """A cluster of :data:`NODES`, ``cpus`` CPUs each, one partition. :meth:`start` brings it up (about 0.5 s)
    or stops what it started and raises with the daemons' logs; :meth:`stop` cancels every job and removes
    everything, the jobs' leftover processes included."""

    def __init__(self, cpus: int = 2) -> None:
        self.cpus = cpus
        self.base = Path(tempfile.mkdtemp(prefix=PREFIX))
        self.conf = self.base / "etc/slurm.conf"
        self.procs: dict[str, subprocess.Popen] = {}

    @property
    def env(self) -> dict[str, str]:
        """This process's environment for a client (sbatch, scontrol...): our SLURM_CONF, and none of the
        SLURM_*/SBATCH_*/SRUN_* variables a surrounding allocation would have set. sbatch hands it on to the
        job, so scontrol inside a job finds this cluster too."""
        prefixes = ("SLURM_", "SBATCH_", "SRUN_", "SALLOC_", "SQUEUE_")
        env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
        env["SLURM_CONF"] = str(self.conf)
        return env

    def _write_config(self) -> None:
        b = self.base
        # munged refuses a socket that not every user can reach ("execute permissions for all required"),
        # and mkdtemp makes a 0700 folder
        b.chmod(0o711)
        for d in ("munge", "etc", "state", "log", "run", *(f"spool/{n}" for n in NODES)):
            (b / d).mkdir(parents=True)
        (b / "munge").chmod(0o755)
        fd = os.open(b / "munge/munge.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)  # munged wants 0400
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(1024))
        (b / "etc/plugstack.conf").touch()  # empty: no SPANK plugins from /etc/slurm/plugstack.conf.d
        ctl, *ports = free_ports(1 + len(NODES))
        settings = {
            "ClusterName": "handsigns",
            "SlurmctldHost": "localhost",
            "SlurmctldPort": ctl,
            "SlurmdPort": ports[0],
            "SlurmUser": "root",
            "SlurmdUser": "root",
            "AuthType": "auth/munge",
            "CredType": "cred/munge",
            # cred_expire + 1 s is also how long a requeued job waits to start again: 121 s by default, 5 the least
            "AuthInfo": f"socket={b}/munge/munge.socket,cred_expire=5",
            "StateSaveLocation": f"{b}/state",
            "SlurmdSpoolDir": f"{b}/spool/%n",
            "SlurmctldPidFile": f"{b}/run/slurmctld.pid",
            "SlurmdPidFile": f"{b}/run/slurmd-%n.pid",
            "SlurmctldLogFile": f"{b}/log/slurmctld.log",
            "SlurmdLogFile": f"{b}/log/slurmd-%n.log",
            "PlugStackConfig": f"{b}/etc/plugstack.conf",
            "ProctrackType": "proctrack/linuxproc",  # no cgroups needed
            "TaskPlugin": "task/none",
            "JobAcctGatherType": "jobacct_gather/none",
            "AccountingStorageType": "accounting_storage/none",  # no slurmdbd, so no sacct: scontrol show job
            "MpiDefault": "none",
            "SwitchType": "switch/none",
            "SelectType": "select/cons_tres",
            "SelectTypeParameters": "CR_CPU",
            "SchedulerType": "sched/backfill",
            # the scheduler every second, not every 60 s: a requeued job starts again as soon as it may
            "SchedulerParameters": "sched_interval=1,bf_interval=1",
            "ReturnToService": 2,
            "JobRequeue": 1,
            "KillWait": 2,  # SIGTERM to SIGKILL: a job that ignores SIGTERM holds its nodes this long
            "MinJobAge": 3600,  # finished jobs stay in `scontrol show job`
            "InactiveLimit": 0,
            "MessageTimeout": 5,
            "BatchStartTimeout": 10,
            "SlurmdParameters": "config_overrides",  # CPUs= as written, more than the machine has if need be
            "MailProg": "/bin/true",
        }
        lines = [f"{k}={v}" for k, v in settings.items()]
        lines += [
            f"NodeName={n} NodeHostname={n} NodeAddr=127.0.0.1 Port={p} CPUs={self.cpus} RealMemory=1000"
            for n, p in zip(NODES, ports, strict=True)
        ]
        lines.append("PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP")
        self.conf.write_text("\n".join(lines) + "\n")

    def _spawn(self, name: str, argv: list[str]) -> None:
        with open(self.base / f"log/{name}.out", "ab") as log:
            self.procs[name] = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**self.env, TAG: self.base.name},
                cwd=self.base,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        (self.base / "run/pids.json").write_text(json.dumps({k: p.pid for k, p in self.procs.items()}))

    def wait_for(self, what: str, ready: Callable[[], T | None], timeout: float) -> T:
        """Poll ``ready`` until it returns something truthy; fail at once if a daemon died."""
        deadline, pause = time.monotonic() + timeout, 0.05
        while True:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise SlurmError(f"{name} exited ({p.returncode}) while waiting for {what}\n{self.logs()}")
            found = ready()
            if found:
                return found
            if time.monotonic() > deadline:
                raise SlurmError(f"no {what} after {timeout} s\n{self.logs()}")
            time.sleep(pause)
            pause = min(pause * 1.5, 0.5)

    def start(self, timeout: float = 30) -> SlurmCluster:
        try:
            cleanup_stale(keep=self.base)
            self._write_config()
            m = self.base / "munge"
            self._spawn(
                "munged",
                [
                    BIN["munged"],
                    "-F",
                    "--force",
                    f"--socket={m}/munge.socket",
                    f"--key-file={m}/munge.key",
                    *(f"--{what}-file={m}/munged.{what}" for what in ("pid", "log", "seed")),
                ],
            )
            self.wait_for("munge socket", (m / "munge.socket").exists, 10)
            self._spawn("slurmctld", [BIN["slurmctld"], "-D", "-i", "-f", str(self.conf)])
            self.wait_for("slurmctld", lambda: "UP" in self.run("scontrol", "ping", check=False).stdout, timeout)
            for n in NODES:
                self._spawn(f"slurmd-{n}", [BIN["slurmd"], "-D", "-f", str(self.conf), "-N", n])
            self.wait_for("idle nodes", self._all_idle, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _all_idle(self) -> bool:
        states = self.run("sinfo", "-h", "-N", "-o", "%t", check=False).stdout.split()
        return len(states) == len(NODES) and set(states) == {"idle"}

    def run(
        self, *argv: str, check: bool = True, env: dict[str, str] | None = None, timeout: float = 30
    ) -> subprocess.CompletedProcess:
        """A client command (``sbatch``, ``scontrol``...) against this cluster, ``env`` added to :attr:`env`."""
        cmd = [BIN.get(argv[0]) or argv[0], *argv[1:]]
        proc = subprocess.run(cmd, env={**self.env, **(env or {})}, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode:
            raise SlurmError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
        return proc

    def sbatch(self, *args: str, env: dict[str, str] | None = None) -> int:
        """``sbatch ARGS`` (options, then the script); the job's id. The job gets this process's environment
        with ``env`` added."""
        return int(self.run("sbatch", "--parsable", *args, env=env).stdout.strip().split(";")[0])

    def records(self, job: int) -> list[dict[str, str]]:
        """``scontrol show job``'s fields, one record per task of an array (values with spaces are cut at the
        first space; JobState, Restarts, NodeList and the counts are whole). No accounting here, so no sacct."""
        out = self.run("scontrol", "show", "job", "-o", str(job), check=False).stdout
        return [dict(tok.split("=", 1) for tok in line.split() if "=" in tok) for line in out.splitlines() if line]

    def wait_job(
        self, job: int, state: str = "COMPLETED", timeout: float = 300, output: Path | None = None
    ) -> list[dict[str, str]]:
        """Wait until ``job`` (every task of an array) is in ``state``; its records. Fails at once when one ends
        in another state, with the tail of ``output``, the job's output file."""

        def reached() -> list[dict[str, str]] | None:
            records = self.records(job)
            states = {r.get("JobState") for r in records}
            if records and states == {state}:
                return records
            if states & FINAL - {state}:
                tail = output.read_text()[-4000:] if output and output.exists() else ""
                keys = ("JobId", "ArrayTaskId", "JobState", "Reason", "ExitCode", "Restarts", "NodeList")
                brief = [{k: r[k] for k in keys if k in r} for r in records]
                raise SlurmError(f"job {job} ended {states}, not {state}: {brief}\n{tail}")
            return None

        return self.wait_for(f"job {job} {state}", reached, timeout)

    def stop(self) -> None:
        """Cancel every job, stop the daemons, kill what the jobs left and remove the folder."""
        if self.procs.get("slurmctld") and self.procs["slurmctld"].poll() is None:
            self.run("scancel", "--user=root", check=False)
            with contextlib.suppress(SlurmError):  # slurmstepd kills the jobs' processes: give it a moment
                self.wait_for("empty queue", lambda: not self.run("squeue", "-h", check=False).stdout.strip(), 5)
        for p in self.procs.values():  # all at once: each exits on its own SIGTERM
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        kill_tagged(self.base)
        shutil.rmtree(self.base, ignore_errors=True)

    def logs(self, lines: int = 15) -> str:
        """The tail of every daemon's log, for an error message."""
        logs = [*sorted((self.base / "log").glob("*")), self.base / "munge/munged.log"]
        return "\n".join(
            f"--- {p.name}\n" + "".join(p.read_text().splitlines(True)[-lines:]) for p in logs if p.exists()
        )


def kill_tagged(base: Path) -> None:
    """SIGKILL every process started by the cluster in ``base`` that outlived its daemons: orphaned slurmstepds
    carry the daemons' tag, job processes the SLURM_CONF they were submitted with."""
    marks = {f"{TAG}={base.name}".encode(), f"SLURM_CONF={base}/etc/slurm.conf".encode()}
    me = os.getpid()
    for _ in range(3):
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == me:
                continue
            with contextlib.suppress(OSError):
                if marks & set((proc / "environ").read_bytes().split(b"\0")):
                    found.append(int(proc.name))
        if not found:
            return
        for pid in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)


def cleanup_stale(keep: Path) -> None:
    """Remove the clusters a killed test run left behind: the daemons die with the test run (their parent), the
    jobs' processes and the folder do not. A cluster whose daemons still run (another test run's) is left."""
    for base in Path(tempfile.gettempdir()).glob(f"{PREFIX}*"):
        if base == keep:
            continue
        try:
            pids: Any = json.loads((base / "run/pids.json").read_text()).values()
        except (OSError, ValueError):
            try:
                if time.time() - base.stat().st_mtime < 120:  # no pids yet: maybe starting right now
                    continue
            except OSError:  # removed meanwhile, by another test run's clean-up
                continue
            pids = []
        if not any(_alive(pid) for pid in pids):
            kill_tagged(base)
            shutil.rmtree(base, ignore_errors=True)


def _alive(pid: int) -> bool:
    """``pid`` runs (a zombie does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _die_with_parent() -> None:
    # in the daemon before exec: the kernel sends it SIGTERM when the test run that started it dies, even by
    # SIGKILL, so no cluster outlives its tests
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
