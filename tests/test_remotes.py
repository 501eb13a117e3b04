"""Runs travel through a DVC remote, against real servers on 127.0.0.1 that the tests start: OpenSSH's sshd
(writable, through dvc-ssh) and the standard library's HTTP server (a read-only mirror of the same folder).

One "GPU box" project trains the tiny recipe on the SIGNS zip, commits, pushes git to a bare origin and its
outputs to the SSH remote; every test then plays a second machine: a clone that pulls instead of training.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import DVC, REQUIRED_IN_CI, TINY, VENV_BIN, dvc, make_project, project_env, run
from helpers.servers import MISSING_SSHD, SSHD, SSHServer, http_server, sshd

slow = pytest.mark.slow
needs_sshd = pytest.mark.skipif(SSHD is None and not REQUIRED_IN_CI, reason=MISSING_SSHD)
HANDSIGNS = str(VENV_BIN / "handsigns")


@dataclass(frozen=True)
class Team:
    root: Path
    origin: Path  # the bare git repository every machine clones
    box: Path  # the machine that trained and pushed
    store: Path  # the SSH remote's folder, also served read-only over HTTP
    served: Path  # what the HTTP server serves
    ssh: SSHServer
    mirror: str  # the HTTP server's base URL


def objects(store: Path) -> set[str]:
    """The objects in a DVC remote folder (files/md5/xx/yyy, yyy.dir for a folder's listing), temporaries left."""
    return {p.relative_to(store).as_posix() for p in (store / "files").rglob("*") if p.is_file() and OBJECT(p.name)}


OBJECT = re.compile(r"[0-9a-f]{30}(\.dir)?").fullmatch


def damaged(store: Path) -> list[str]:
    """Objects whose bytes do not hash to their name (DVC names every object by its md5, a listing's too)."""
    return [
        o
        for o in objects(store)
        if hashlib.md5((store / o).read_bytes()).hexdigest() != "".join(o.split("/")[-2:]).removesuffix(".dir")
    ]


@pytest.fixture(scope="module")
def team(tmp_path_factory) -> Iterator[Team]:
    root = tmp_path_factory.mktemp("remotes")
    served = root / "served"
    store = served / "store"
    store.mkdir(parents=True)
    with sshd(root / "ssh") as ssh, http_server(served) as base_url:
        origin = root / "origin.git"
        run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], root)
        box = make_project(root / "gpu-box", overrides=TINY, git=True)
        run(["git", "branch", "-M", "main"], box)
        run(["git", "remote", "add", "origin", str(origin)], box)
        # the read-only mirror, then the writable SSH remote, which is named last and so is the default
        run([HANDSIGNS, "remote", "--name", "mirror", f"{base_url}/store"], box)
        run([HANDSIGNS, "remote", ssh.url(store)], box)
        dvc(box, "remote", "modify", "--local", "storage", "keyfile", str(ssh.keyfile))
        dvc(box, "repro", "-q")
        run(["git", "add", "-A"], box)
        run(["git", "commit", "-qm", "a run of the tiny recipe on SIGNS"], box)
        run(["git", "push", "-q", "origin", "main"], box)
        dvc(box, "push", env=ssh.env)
        yield Team(root, origin, box, store, served, ssh, f"{base_url}/store")


def clone(team: Team, name: str) -> Path:
    """A second machine: a fresh clone of origin, with the SSH key (a credential: .dvc/config.local)."""
    dest = team.root / name
    run(["git", "clone", "-q", str(team.origin), str(dest)], team.root)
    run(["git", "config", "user.email", "t@example.invalid"], dest)
    run(["git", "config", "user.name", "t"], dest)
    dvc(dest, "remote", "modify", "--local", "storage", "keyfile", str(team.ssh.keyfile))
    return dest


def lock_md5(repo: Path, out: str) -> str:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return next(o["md5"] for s in lock["stages"].values() for o in s.get("outs", []) if o["path"] == out)


def test_a_password_in_the_remote_url_is_refused():
    from handsigns.errors import UserError
    from handsigns.vcs import name_remote

    with pytest.raises(UserError, match=r"password.*dvc remote modify --local storage password"):
        name_remote("ssh://me:secret@host/srv/dvc", "storage")


@slow
def test_pull_without_a_remote_says_how_to_name_one(tmp_path):
    project = make_project(tmp_path / "alone", overrides=TINY, git=True)
    proc = run([HANDSIGNS, "pull"], project, check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("error: no DVC remote is named") and "make remote URL=" in proc.stderr


@slow
@needs_sshd
def test_the_remote_is_committed_without_credentials(team):
    config = (team.box / ".dvc/config").read_text()
    assert "remote = storage" in config and team.ssh.url(team.store) in config and team.mirror in config
    assert config.count("verify = true") == 2  # both remotes: damaged objects are caught on pull
    assert str(team.ssh.keyfile) not in config  # the key lives in the git-ignored config.local
    assert str(team.ssh.keyfile) in (team.box / ".dvc/config.local").read_text()
    assert run(["git", "check-ignore", ".dvc/config.local"], team.box).returncode == 0


@slow
@needs_sshd
def test_a_second_machine_pulls_the_run_over_ssh_and_predicts(team):
    machine = clone(team, "laptop")
    assert not (machine / "models/model.onnx").exists()
    proc = run([HANDSIGNS, "pull"], machine, env=team.ssh.env)
    assert "each checked against dvc.lock" in proc.stdout
    assert json.loads(dvc(machine, "status", "--json").stdout) == {}  # everything as dvc.lock records
    assert run(["git", "status", "--porcelain"], machine).stdout == ""
    with open(machine / "metrics/eval/predictions_test.csv") as f:
        committed = {r["path"]: r["predicted"] for r in csv.DictReader(f)}
    images = [f"data/raw/{p}" for p in committed]
    out = run([HANDSIGNS, "predict", "--json", *images], machine).stdout.splitlines()
    labels = {json.loads(line)["path"].removeprefix("data/raw/"): json.loads(line)["label"] for line in out}
    assert len(committed) == 120 and labels == committed  # the pulled ONNX model labels the SIGNS test images


@slow
@needs_sshd
def test_repro_pull_allow_missing_runs_only_what_changed(team):
    machine = clone(team, "ci-runner")
    proc = dvc(machine, "repro", "--pull", "--allow-missing", env=team.ssh.env)
    assert "Running stage" not in proc.stdout, proc.stdout  # nothing changed: nothing runs, nothing is fetched
    params = yaml.safe_load((machine / "params.yaml").read_text())
    params["evaluate"]["batch_size"] = 32  # a change downstream of training
    (machine / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = dvc(machine, "repro", "--pull", "--allow-missing", env=team.ssh.env)
    assert "Running stage 'evaluate'" in proc.stdout and "Running stage 'train'" not in proc.stdout, proc.stdout
    assert (machine / "models/best.pt").exists()  # pulled for evaluate, not trained


@slow
@needs_sshd
def test_the_read_only_http_mirror_serves_pulls_and_refuses_pushes(team):
    machine = clone(team, "reader")
    run([HANDSIGNS, "pull", "--remote", "mirror"], machine)  # no key, no HOME of ours: anyone may read
    assert json.loads(dvc(machine, "status", "--json").stdout) == {}
    (machine / "extra.txt").write_text("a new object the mirror does not have\n")
    dvc(machine, "add", "-q", "extra.txt")
    proc = dvc(machine, "push", "--remote", "mirror", check=False)
    md5 = yaml.safe_load((machine / "extra.txt.dvc").read_text())["outs"][0]["md5"]
    assert proc.returncode != 0 and not (team.store / "files/md5" / md5[:2] / md5[2:]).exists()


@slow
@needs_sshd
def test_verify_checks_a_pulled_run_without_training_and_catches_edited_metrics(team):
    machine = clone(team, "verifier")
    gate = [sys.executable, "-m", "handsigns.cli", "gate", "--verify"]
    proc = run([*gate, "--base", "HEAD"], machine, env=team.ssh.env)
    assert "Running stage 'train'" not in proc.stdout and "Running stage 'evaluate'" in proc.stdout
    assert "export check: models/model.onnx and its weights agree with models/best.pt" in proc.stdout
    assert "re-derived from the pulled model byte for byte" in proc.stdout
    assert "verified from the DVC remote without training" in proc.stdout

    # a better test accuracy written by hand, and dvc.lock made to agree (`dvc commit`): only re-deriving sees it
    metrics = json.loads((machine / "metrics/eval.json").read_text())
    metrics["test"]["accuracy"] = round(min(1.0, metrics["test"]["accuracy"] + 0.05), 6)
    (machine / "metrics/eval.json").write_text(json.dumps(metrics, indent=2) + "\n")
    dvc(machine, "commit", "-f", "-q")
    run(["git", "commit", "-qam", "better figures"], machine)
    proc = run([*gate, "--base", "HEAD~1"], machine, env=team.ssh.env, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    assert "gate: FAIL: metrics/eval.json does not hold what the pulled model scores: test.accuracy" in proc.stderr

    # the same edit without touching dvc.lock: the lock check names it
    run(["git", "reset", "-q", "--hard", "HEAD~1"], machine)
    (machine / "metrics/eval.json").write_text(json.dumps(metrics, indent=2) + "\n")
    run(["git", "commit", "-qam", "better figures, lock untouched"], machine)
    proc = run([*gate, "--base", "HEAD~1"], machine, env=team.ssh.env, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "the pulled run is not what dvc.lock at HEAD records: evaluate:metrics/eval.json" in proc.stderr


@slow
@needs_sshd
def test_an_experiment_travels_from_the_box_to_a_laptop(team):
    box = team.box
    dvc(box, "exp", "run", "-q", "-S", "lr=0.02", "-n", "lr-002")
    made = (box / "metrics/eval.json").read_text()
    dvc(box, "exp", "push", "origin", "lr-002", env=team.ssh.env)
    run(["git", "checkout", "-q", "--", "."], box)  # the box's workspace back to main's run
    dvc(box, "checkout", "-q")

    laptop = clone(team, "reviewer")
    assert "lr-002" in dvc(laptop, "exp", "list", "origin", env=team.ssh.env).stdout
    dvc(laptop, "exp", "pull", "origin", "lr-002", env=team.ssh.env)
    shown = json.loads(dvc(laptop, "exp", "show", "--json").stdout)
    names = {r.get("name") for rev in shown for exp in (rev.get("experiments") or []) for r in exp.get("revs", [])}
    assert "lr-002" in names, shown
    dvc(laptop, "exp", "apply", "lr-002")
    assert yaml.safe_load((laptop / "params.yaml").read_text())["lr"] == 0.02
    assert (laptop / "metrics/eval.json").read_text() == made
    assert json.loads(dvc(laptop, "status", "--json").stdout) == {}  # its model came along


@slow
@needs_sshd
def test_a_push_cut_off_half_way_completes_when_run_again(team):
    cut = team.served / "cut"
    box = team.box
    dvc(box, "remote", "add", "--local", "cut", team.ssh.url(cut))
    dvc(box, "remote", "modify", "--local", "cut", "keyfile", str(team.ssh.keyfile))
    proc = subprocess.Popen(
        [DVC, "push", "--remote", "cut", "--jobs", "1"],
        cwd=box,
        env=project_env(HOME=str(team.ssh.home)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while len(objects(cut) if cut.exists() else ()) < 50 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # the machine loses power or the network half-way
    proc.wait()
    before = objects(cut)
    assert damaged(cut) == []  # cut off, yet every object there is whole: each is written aside, then renamed
    dvc(box, "push", "--remote", "cut", env=team.ssh.env)
    after = objects(cut)
    assert 50 <= len(before) < len(after) and before < after, (len(before), len(after))  # it was cut, then done
    machine = clone(team, "after-cut")
    dvc(machine, "remote", "add", "--local", "cut", team.ssh.url(cut))
    dvc(machine, "remote", "modify", "--local", "cut", "keyfile", str(team.ssh.keyfile))
    dvc(machine, "remote", "modify", "--local", "cut", "verify", "true")
    run([HANDSIGNS, "pull", "--remote", "cut"], machine, env=team.ssh.env)
    assert json.loads(dvc(machine, "status", "--json").stdout) == {}


@slow
@needs_sshd
def test_an_object_damaged_on_the_remote_is_caught_on_pull(team):
    damaged = team.served / "damaged"
    shutil.copytree(team.store, damaged)
    md5 = lock_md5(team.box, "models/model.onnx")
    obj = damaged / "files/md5" / md5[:2] / md5[2:]
    data = bytearray(obj.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: same size, other content
    obj.write_bytes(bytes(data))

    machine = clone(team, "unlucky")
    dvc(machine, "remote", "add", "--local", "damaged", f"{team.mirror.rsplit('/', 1)[0]}/damaged")
    dvc(machine, "remote", "modify", "--local", "damaged", "verify", "true")  # as `handsigns remote` sets
    proc = run([HANDSIGNS, "pull", "--remote", "damaged"], machine, check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: `dvc pull` from remote 'damaged' could not get models/model.onnx: missing")
    assert not (machine / "models/model.onnx").exists()  # nothing of it written
    assert (machine / "models/best.pt").exists()  # the intact outputs arrived


@slow
@needs_sshd
def test_a_predict_only_user_gets_the_registered_model(team):
    box = team.box
    run([str(VENV_BIN / "gto"), "register", "handsigns", "--version", "v0.1.0"], box)
    run(["git", "push", "-q", "origin", "handsigns@v0.1.0"], box)
    user = team.root / "predict-only"
    user.mkdir()
    dvc(user, "artifacts", "get", str(team.origin), "handsigns", "--remote", "mirror", "-o", "model.onnx")
    dvc(user, "get", str(team.origin), "models/model.json", "--rev", "handsigns@v0.1.0", "--remote", "mirror")
    image = next((box / "data/raw/64x64_SIGNS/test_signs").glob("*.jpg"))
    label = run([HANDSIGNS, "predict", "--model", "model.onnx", str(image)], user).stdout.split("\t")[1]
    classes = json.loads((user / "model.json").read_text())["classes"]
    assert label in classes and (user / "model.onnx").read_bytes() == (box / "models/model.onnx").read_bytes()
