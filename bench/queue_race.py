"""DVC's experiment queue with several workers: how many queued experiments finish, how many fail.

DVC has an open report that `dvc queue start -j N` with N above 1 fails experiments that should not fail
(treeverse/dvc#10673). This measures it on the real pipeline: a throwaway git + DVC project on the shipped SIGNS
zip with a tiny recipe (16 px, 2 epochs), ROUNDS rounds of EXPERIMENTS queued experiments (each another seed),
run by `dvc queue start -j WORKERS`; then `dvc queue status` and `dvc exp show` say what happened.

    python bench/queue_race.py                       # 3 rounds of 4 experiments, 2 workers
    python bench/queue_race.py --rounds 5 --workers 1

Writes bench/results/queue_race.{json,md}; the workspace is left untouched.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import RESULTS, ROOT, SIGNS_ZIP, project, write_results

TINY = [
    "epochs=2",
    "batch_size=16",
    "model.image_size=16",
    "model.num_channels=4",
    "train.min_steps=0",
    "train.steps_factor=1.0",
]
ENV = {
    **os.environ,
    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",  # dvc.yaml's python
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.invalid",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.invalid",
}
DVC = str(Path(sys.executable).parent / "dvc")


def sh(repo: Path, *cmd: str) -> str:
    proc = subprocess.run(cmd, cwd=repo, env=ENV, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"error: {' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return proc.stdout


def git_project(workdir: Path) -> Path:
    """bench/common.py's project on the shipped zip, with dvc.yaml and src/ (stage dependencies), as a git + DVC
    repository with one commit: what `dvc exp run --queue` needs."""
    repo = project(workdir, TINY, source=SIGNS_ZIP)
    shutil.copytree(ROOT / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy2(ROOT / name, repo / name)
    sh(repo, "git", "init", "-q")
    sh(repo, DVC, "init", "-q")
    sh(repo, DVC, "config", "core.analytics", "false")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "project")
    return repo


def statuses(repo: Path) -> dict[str, str]:
    """`dvc queue status`'s tasks: name (task id where it has none) -> Queued, Running, Success or Failed."""
    tasks = {}
    for line in sh(repo, DVC, "queue", "status").splitlines():
        cols = line.split()  # task, name, created (one to three words), status
        if cols and re.fullmatch(r"[0-9a-f]{7}", cols[0]) and cols[-1] in ("Queued", "Running", "Success", "Failed"):
            tasks[cols[1] if re.fullmatch(r"[a-z]+-\d+", cols[1]) else cols[0]] = cols[-1]
    return tasks


def last_log_line(repo: Path, name: str) -> str:
    """A failed task's last log line; the reported failure often leaves no log, which is a finding, not an error."""
    proc = subprocess.run([DVC, "queue", "logs", name], cwd=repo, env=ENV, capture_output=True, text=True)
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return lines[-1] if lines else "(no log)"


def one_round(repo: Path, first_seed: int, experiments: int, workers: int, timeout: float) -> dict:
    names = [f"seed-{s}" for s in range(first_seed, first_seed + experiments)]
    for seed, name in zip(range(first_seed, first_seed + experiments), names, strict=True):
        sh(repo, DVC, "exp", "run", "--queue", "-n", name, "-S", f"seed={seed}")
    started = time.perf_counter()
    # Not through sh(): the workers DVC starts inherit its stdout, and a pipe read to its end would wait for them
    with tempfile.TemporaryFile("w+") as log:
        if subprocess.run(
            [DVC, "queue", "start", "-j", str(workers)], cwd=repo, env=ENV, stdout=log, stderr=log
        ).returncode:
            log.seek(0)
            raise SystemExit(f"error: dvc queue start failed:\n{log.read()[-2000:]}")
    most = 0  # the most experiments seen running at once: did the workers run side by side?
    while True:
        tasks = {n: s for n, s in statuses(repo).items() if n in names}
        most = max(most, sum(s == "Running" for s in tasks.values()))
        if len(tasks) == experiments and all(s in ("Success", "Failed") for s in tasks.values()):
            break
        if time.perf_counter() - started > timeout:
            break  # reported as what it is: tasks still queued or running
        time.sleep(2)
    seconds = time.perf_counter() - started
    shown = json.loads(sh(repo, DVC, "exp", "show", "--json"))
    listed = {e["name"] for rev in shown for e in (rev.get("experiments") or []) if e.get("name") in names}
    failed = {n: last_log_line(repo, n) for n, s in tasks.items() if s == "Failed"}
    return {
        "seconds": round(seconds, 1),
        "most_running_at_once": most,
        "statuses": {n: tasks.get(n, "missing") for n in names},
        "listed_by_exp_show": sorted(listed),
        "failed_logs_last_line": failed,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--experiments", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=600, help="seconds a round may take")
    ap.add_argument("--out", type=Path, default=RESULTS / "queue_race")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="handsigns-queue-") as tmp:
        repo = git_project(Path(tmp) / "project")
        rounds = []
        try:
            for r in range(args.rounds):
                rounds.append(one_round(repo, r * args.experiments, args.experiments, args.workers, args.timeout))
                print(f"round {r + 1}: {rounds[-1]}", flush=True)
        finally:  # no worker left running in a folder about to be removed
            subprocess.run([DVC, "queue", "stop", "--kill"], cwd=repo, env=ENV, capture_output=True)
    dvc_version = subprocess.run([DVC, "--version"], capture_output=True, text=True, env=ENV).stdout.strip()
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    report = {"dvc": dvc_version, "settings": settings, "rounds": rounds}
    rows = [
        f"| {i + 1} | {sum(s == 'Success' for s in x['statuses'].values())} | "
        f"{sum(s == 'Failed' for s in x['statuses'].values())} | "
        f"{sum(s not in ('Success', 'Failed') for s in x['statuses'].values())} | "
        f"{len(x['listed_by_exp_show'])} | {x['most_running_at_once']} | {x['seconds']} |"
        for i, x in enumerate(rounds)
    ]
    md = (
        f"DVC {dvc_version}: {args.experiments} queued experiments, `dvc queue start -j {args.workers}`, "
        f"{args.rounds} rounds\n\n"
        "| round | success | failed | not finished | in `dvc exp show` | most at once | seconds |\n"
        "|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )
    write_results(args.out, report, md)
    print(md)


if __name__ == "__main__":
    main()
