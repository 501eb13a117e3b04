"""What a resume saves: the train stage on the shipped data, uninterrupted against killed (SIGKILL) after epoch K
and run again, side by side; the two must end with identical best.pt and metrics/train.json bytes.

    python bench/resume.py            # kill after epoch 10
    python bench/resume.py --kill-after 15

Needs the data stages' outputs (`dvc repro split`). Runs in temporary folders (bench/common.py's project), so
the workspace is left untouched. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, project

COMPARED = ("models/best.pt", "metrics/train.json")


def train(workdir: Path, kill_after: int | None = None) -> tuple[float, str]:
    """Run the train stage in ``workdir`` (SIGKILLed once it prints epoch ``kill_after``): seconds, output."""
    started = time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "stages/train.py"],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if kill_after is not None and line.startswith(f"epoch {kill_after:3d}/"):
            time.sleep(0.2)  # past the epoch's checkpoint write, into the next epoch: its work is lost
            proc.send_signal(signal.SIGKILL)
            break
    code = proc.wait()
    if (code != 0) != (kill_after is not None):
        raise SystemExit(f"train stage in {workdir} exited {code}:\n{''.join(lines)[-2000:]}")
    return time.perf_counter() - started, "".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kill-after", type=int, default=10, help="epoch after which the first attempt is killed")
    args = ap.parse_args()
    if not (ROOT / "data/index/train.csv").exists():
        raise SystemExit("error: data/index not found; run `dvc repro split` first")
    with tempfile.TemporaryDirectory(prefix="handsigns-resume-") as tmp:
        straight, killed = (project(Path(tmp) / name, data_from=ROOT) for name in ("straight", "killed"))
        straight_s, out = train(straight)
        epochs = int(re.search(r"^epoch +1/(\d+)", out, re.M)[1])
        killed_s, _ = train(killed, args.kill_after)
        resumed_s, again = train(killed)
        resumed_after = int(re.search(r"resuming from .* after epoch (\d+) of", again)[1])
        same = all((straight / p).read_bytes() == (killed / p).read_bytes() for p in COMPARED)
    print(f"train stage on the workspace's data/index, {epochs} epochs, SIGKILL after epoch {args.kill_after}\n")
    print("| run | seconds |")
    print("|---|---:|")
    print(f"| uninterrupted | {straight_s:.1f} |")
    print(f"| killed during epoch {args.kill_after + 1} | {killed_s:.1f} |")
    print(f"| re-run: resumed after epoch {resumed_after}, trains {epochs - resumed_after} epochs | {resumed_s:.1f} |")
    print(f"| saved by resuming (uninterrupted - resumed) | {straight_s - resumed_s:.1f} |")
    print(f"\nbest.pt and metrics/train.json identical to the uninterrupted run: {same}")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
