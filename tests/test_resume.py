"""Resume through the real pipeline: `dvc repro` killed with SIGKILL mid-training, then run again, ends with the
bytes of an uninterrupted run (the in-process cases: tests/test_train.py)."""

import contextlib
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from handsigns.files import leftovers

from conftest import DVC, TINY, colour_dataset, dvc, make_project, project_env

pytestmark = pytest.mark.slow

EPOCHS = 12
SLOWER = {**TINY, "epochs": EPOCHS, "model": {"image_size": 48, "num_channels": 24}}  # ~0.3 s an epoch
# What training writes; a test that only resumes training runs `dvc repro train` and compares these (evaluate
# and export are functions of best.pt: the first kill test runs them and compares their outputs too).
TRAINED = (
    "models/best.pt",
    "metrics/train.json",
    "metrics/train/plots/metrics/val/accuracy.tsv",
    "metrics/train/plots/metrics/train/loss.tsv",
)
OUTPUTS = (*TRAINED, "metrics/eval.json", "models/model.safetensors")


def processes_in(folder) -> list[str]:
    """The command lines of the processes whose working directory is ``folder`` (Linux /proc)."""
    found = []
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if proc.name.isdigit() and Path(os.readlink(proc / "cwd")) == folder:
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
    return found


def start_repro(repo, *targets: str) -> subprocess.Popen:
    """`dvc repro [targets]` in ``repo``, running alongside the test (its own session: a kill reaches all it
    started)."""
    return subprocess.Popen(
        [DVC, "repro", *targets],
        cwd=repo,
        env=project_env(PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def kill_after_epoch(repo, epoch: int) -> str:
    """Start `dvc repro`, SIGKILL it (and the stage it runs) once training has printed ``epoch``; its output."""
    proc = start_repro(repo)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith(f"epoch {epoch:3d}/"):
            time.sleep(0.05)  # into the next epoch (or its checkpoint write): wherever the kill lands
            os.killpg(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    return "".join(seen)


def kill_during_checkpoint_write(repo, attempts: int = 3) -> str:
    """Start `dvc repro train` and SIGKILL it the moment a resume-checkpoint write is under way (its temporary
    file exists, not yet renamed into place); its output. Asserts the kill did land inside a write."""
    resume = repo / "models/.resume"
    for _ in range(attempts):
        proc = start_repro(repo, "train")
        seen: list[str] = []
        reader = threading.Thread(target=seen.extend, args=(proc.stdout,), daemon=True)
        reader.start()
        while proc.poll() is None:  # poll as fast as we can: a write lasts milliseconds
            with contextlib.suppress(FileNotFoundError):
                if any(name.startswith(".train.pt.") for name in os.listdir(resume)):
                    os.killpg(proc.pid, signal.SIGKILL)
                    break
        proc.wait(timeout=60)
        reader.join(timeout=60)
        assert proc.returncode != 0, "".join(seen)  # the run must not have finished before a write was caught
        if leftovers(resume / "train.pt"):  # the kill landed before the rename: the half-written file is left
            return "".join(seen)
    raise AssertionError(f"no kill landed inside a checkpoint write in {attempts} attempts")


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> tuple[Path, Path, float]:
    """One uninterrupted run, the reference both single-process kill tests compare their bytes with: its data
    source, its project and how long its `dvc repro` took."""
    root = tmp_path_factory.mktemp("straight")
    source = colour_dataset(root / "source", per_class=60, size=48)
    repo = make_project(root / "repo", {"source": str(source)}, overrides=SLOWER, git=True)
    started = time.perf_counter()
    dvc(repo, "repro")
    return source, repo, time.perf_counter() - started


def test_a_killed_repro_resumes_to_the_bytes_of_an_uninterrupted_run(straight, tmp_path):
    source, straight, uninterrupted_s = straight
    killed = make_project(tmp_path / "killed", {"source": str(source)}, overrides=SLOWER, git=True)

    first = kill_after_epoch(killed, 5)
    assert "Running stage 'train'" in first and (killed / "models/.resume/train.pt").exists()
    started = time.perf_counter()
    again = dvc(killed, "repro").stdout
    resumed_s = time.perf_counter() - started
    resumed_after = int(re.search(r"train: resuming from models/.resume/train.pt after epoch (\d+) of 12", again)[1])
    # the kill came after epoch 5's line, before the end; under load, before epoch 5's checkpoint was written
    assert 4 <= resumed_after < EPOCHS
    assert again.count("\nepoch ") == EPOCHS - resumed_after  # only the epochs the kill lost are trained again
    for path in OUTPUTS:
        assert (killed / path).read_bytes() == (straight / path).read_bytes(), path
    assert not (killed / "models/.resume").exists()  # a completed run leaves nothing behind
    print(
        f"\nuninterrupted dvc repro {uninterrupted_s:.1f} s; after the kill at epoch {resumed_after + 1} of "
        f"{EPOCHS}, the resumed one {resumed_s:.1f} s"
    )


def test_a_kill_inside_a_checkpoint_write_resumes_from_the_last_complete_one(straight, tmp_path):
    source, straight, _ = straight
    killed = make_project(tmp_path / "killed", {"source": str(source)}, overrides=SLOWER, git=True)

    first = kill_during_checkpoint_write(killed)
    done = [int(m) for m in re.findall(r"^epoch +(\d+)/", first, re.M)]
    again = dvc(killed, "repro", "train").stdout
    # The cut write was of the last epoch printed; the one before it is the last complete checkpoint
    resumed_after = (
        int(re.search(r"resuming from models/.resume/train.pt after epoch (\d+) of", again)[1])
        if ("resuming" in again)
        else 0
    )
    assert resumed_after == (done[-1] - 1 if done else 0), (done, again)
    for path in TRAINED:
        assert (killed / path).read_bytes() == (straight / path).read_bytes(), path
    assert not (killed / "models/.resume").exists()  # the half-written file is cleaned up too


def test_changed_params_start_over_and_say_why(tmp_path):
    source = colour_dataset(tmp_path / "source", per_class=60, size=48)
    repo = make_project(tmp_path / "repo", {"source": str(source)}, overrides=SLOWER, git=True)
    kill_after_epoch(repo, 3)
    params = (repo / "params.yaml").read_text().replace("lr: 0.01", "lr: 0.02")
    (repo / "params.yaml").write_text(params)
    out = dvc(repo, "repro", "train").stdout
    assert "train: not resuming from models/.resume/train.pt: it was saved with other params; starting over" in out
    assert out.count("\nepoch ") == EPOCHS


def test_a_second_repro_in_the_same_checkout_is_refused_and_corrupts_nothing(tmp_path):
    source = colour_dataset(tmp_path / "source", per_class=60, size=48)
    repo = make_project(tmp_path / "repo", {"source": str(source)}, overrides=SLOWER, git=True)
    first = start_repro(repo, "train")
    lines = []
    for line in first.stdout:
        lines.append(line)
        if line.startswith("epoch   2/"):
            break
    second = dvc(repo, "repro", "train", check=False)
    lines += first.stdout.readlines()
    assert first.wait(timeout=300) == 0, "".join(lines)
    refusal = second.stdout + second.stderr  # DVC's lock on the outputs the first run is writing
    assert second.returncode != 0 and "is being blocked by" in refusal and "dvc repro" in refusal, refusal
    assert dvc(repo, "status", "train", "--quiet", check=False).returncode == 0  # train's outputs match


def test_a_killed_two_process_run_resumes_to_the_bytes_of_an_uninterrupted_one(tmp_path):
    source = colour_dataset(tmp_path / "source", per_class=60, size=48)
    straight = make_project(tmp_path / "straight", {"source": str(source)}, overrides={**SLOWER, "nproc": 2}, git=True)
    killed = tmp_path / "killed"
    shutil.copytree(straight, killed)
    dvc(straight, "repro", "train")
    kill_after_epoch(killed, 5)
    time.sleep(1)
    assert processes_in(killed) == [], "a training process outlived the kill"
    again = dvc(killed, "repro", "train").stdout
    assert re.search(r"train: resuming from models/.resume/train.pt after epoch \d+ of 12", again), again
    for path in TRAINED:
        assert (killed / path).read_bytes() == (straight / path).read_bytes(), path
