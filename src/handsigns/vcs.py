"""git and DVC, run as subprocesses: the one home of the commands ``handsigns gate`` and ``compare`` use."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from handsigns.errors import UserError


def show(rev: str, path: str) -> str | None:
    """The text of ``path`` at git revision ``rev``, or None when it is not there."""
    proc = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True, check=False)
    return proc.stdout if proc.returncode == 0 else None


def text_at(rev: str | None, path: str) -> str | None:
    """The text of ``path`` at git revision ``rev``, or in the workspace when ``rev`` is None; None when it is not
    there."""
    if rev is not None:
        return show(rev, path)
    return Path(path).read_text() if Path(path).exists() else None


def changed_files(paths: list[str]) -> list[str]:
    """Files under ``paths`` that differ from HEAD in the workspace: modified, deleted or new."""
    proc = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all", "--no-renames", "--", *paths],
        capture_output=True,
        text=True,
        check=True,
    )
    return sorted(line[3:] for line in proc.stdout.splitlines())


def require_rev(rev: str) -> None:
    """A UserError unless ``rev`` names a commit of this repository."""
    found = (
        subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], capture_output=True, check=False
        ).returncode
        == 0
    )
    if not found:
        raise UserError(f"git revision {rev!r} not found; pass --base with a branch, tag or commit")


def dvc_path() -> str:
    """The environment's own dvc (beside this Python), else the first on PATH."""
    beside = Path(sys.executable).with_name("dvc")
    found = str(beside) if beside.exists() else shutil.which("dvc")
    if not found:
        raise UserError("dvc not found; run inside the project's environment (make repro installs it)")
    return found


def dvc_env() -> dict[str, str]:
    return {**os.environ, "DVC_NO_ANALYTICS": "1"}


def run_dvc(args: list[str]) -> str:
    """stdout of ``dvc ARGS``; a failure is one UserError with DVC's own message."""
    proc = subprocess.run([dvc_path(), *args], capture_output=True, text=True, check=False, env=dvc_env())
    if proc.returncode != 0:
        errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR")]
        detail = (errors or proc.stderr.strip().splitlines() or ["(no message)"])[0]
        raise UserError(f"`dvc {' '.join(args)}` failed: {detail}")
    return proc.stdout.strip()


def reproduce() -> None:
    """``dvc repro --force`` with its output shown: every stage runs, so no committed output is taken on trust
    (a clean clone holds the committed metrics files, and DVC would skip a stage whose deps and outs match
    dvc.lock)."""
    print("gate: dvc repro --force", flush=True)
    code = subprocess.run(
        [dvc_path(), "repro", "--force"], check=False, env=dvc_env(), stdout=sys.stdout, stderr=sys.stderr
    ).returncode
    if code != 0:
        raise UserError(
            f"`dvc repro` failed (exit {code}): the committed pipeline does not reproduce; see its output above"
        )
