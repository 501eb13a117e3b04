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
        raise UserError(f"`dvc {' '.join(args)}` failed: {first_error(proc.stderr)}")
    return proc.stdout.strip()


def first_error(stderr: str) -> str:
    """DVC's own reason for a failure: its first ``ERROR`` line, else its first line."""
    lines = stderr.strip().splitlines()
    return next((line for line in lines if line.startswith("ERROR")), lines[0] if lines else "(no message)")


def default_remote() -> str | None:
    """The DVC remote ``dvc push``/``pull`` use when none is named (``core.remote``), or None."""
    proc = subprocess.run([dvc_path(), "remote", "default"], capture_output=True, text=True, check=False, env=dvc_env())
    return (proc.stdout.strip() or None) if proc.returncode == 0 else None


def name_remote(url: str, name: str) -> None:
    """Name the team's DVC remote in .dvc/config (committed, so every clone knows it): the default of ``dvc
    push`` and ``pull``, with ``verify`` on, so that an object damaged there is caught when pulled (DVC re-hashes
    what it fetches). Credentials stay out of git: a password in the URL is refused."""
    from urllib.parse import urlsplit

    if urlsplit(url).password:
        raise UserError(
            f"the URL holds a password, and .dvc/config is committed: name the remote without it, then "
            f"`dvc remote modify --local {name} password ...` (git-ignored .dvc/config.local)"
        )
    run_dvc(["remote", "add", "--default", "--force", name, url])
    run_dvc(["remote", "modify", name, "verify", "true"])


def pull(remote: str | None = None) -> None:
    """``dvc pull``: the committed run's outputs from a DVC remote into the workspace, each checked against the
    hash dvc.lock records (with the remote's ``verify``, which ``make remote`` sets). A failure is one UserError
    naming what could not be had; DVC writes no file whose object did not arrive whole."""
    name = remote or default_remote()
    if name is None:
        raise UserError(
            "no DVC remote is named, so there is nothing to pull from: `make remote URL=...` names one "
            "(docs/sharing-runs.md), or ask the team for theirs"
        )
    print(f"dvc pull -r {name}", flush=True)
    proc = subprocess.run(
        [dvc_path(), "pull", "--remote", name], capture_output=True, text=True, check=False, env=dvc_env()
    )
    if proc.returncode == 0:
        return
    # DVC lists the outputs it could not check out (missing on the remote, or damaged: a fetched object whose
    # hash is not its name is deleted) one per line after this header, or says what else went wrong
    lines = proc.stderr.splitlines()
    header = next((i for i, line in enumerate(lines) if "Checkout failed for following targets" in line), None)
    if header is not None:
        failed = []
        for line in lines[header + 1 :]:  # the paths, then "Is your cache up to date?" and a link
            if not line.strip() or " " in line.strip() or line.startswith("<"):
                break
            failed.append(line.strip())
        raise UserError(
            f"`dvc pull` from remote {name!r} could not get {', '.join(failed) or 'some outputs'}: missing there "
            "or damaged (their bytes do not match dvc.lock's hash; nothing of them was written here); "
            "`dvc push` them again from the machine that made the run"
        )
    raise UserError(f"`dvc pull` from remote {name!r} failed: {first_error(proc.stderr)}")


def reproduce(stages: tuple[str, ...] = ()) -> None:
    """``dvc repro --force`` with its output shown: every stage runs (or only ``stages``), so no committed output
    is taken on trust (a clean clone holds the committed metrics files, and DVC would skip a stage whose deps
    and outs match dvc.lock)."""
    args = ["repro", "--force", *(["--single-item", *stages] if stages else [])]
    print(f"gate: dvc {' '.join(args)}", flush=True)
    proc = subprocess.run([dvc_path(), *args], check=False, env=dvc_env(), stdout=sys.stdout, stderr=sys.stderr)
    if proc.returncode != 0:
        raise UserError(
            f"`dvc repro` failed (exit {proc.returncode}): the committed pipeline does not reproduce; see its "
            "output above"
        )
