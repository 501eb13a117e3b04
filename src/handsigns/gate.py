"""``handsigns gate``: the metric regression gate of CI.

Compares the workspace's quality metrics (after ``--reproduce``: a forced ``dvc repro`` of every stage) with
committed ones. Fails when val or test accuracy dropped by more than ``ci.max_accuracy_drop`` — read from the
base revision's params.yaml, so a change cannot loosen its own gate — against a base revision (default
``main``); and, with ``--exact``, when the reproduction differs at all from what HEAD commits: any quality
metric, or the hash of any output ``dvc.lock`` records (data, index, weights, exported model, curves,
predictions) other than ``metrics/runtime.json``, whose timings differ on every run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from handsigns.errors import UserError
from handsigns.params import build
from handsigns.params.ci import CIParams

QUALITY_FILES = ("metrics/data.json", "metrics/train.json", "metrics/eval.json")
GATED = ("val.accuracy", "test.accuracy")
NOT_REPRODUCIBLE = {"metrics/runtime.json"}  # seconds and images/s: different on every run
# What decides the floating-point result of a run: the same values here give the same bytes; other kernels,
# thread counts or versions give other (equally valid) sums, so the exact check only applies when all match.
FINGERPRINT = ("device", "device_name", "cpu_capability", "torch_threads", "torch", "precision", "gpu", "cuda",
               "cudnn")


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}


def show(rev: str, path: str) -> str | None:
    """The text of ``path`` at git revision ``rev``, or None when it is not there."""
    proc = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True, check=False)
    return proc.stdout if proc.returncode == 0 else None


def at_rev(rev: str, path: str) -> dict[str, Any] | None:
    text = show(rev, path)
    return None if text is None else flatten(json.loads(text))


def in_workspace(path: str) -> dict[str, Any] | None:
    p = Path(path)
    return flatten(json.loads(p.read_text())) if p.exists() else None


def committed_at(rev: str) -> dict[str, dict | None]:
    found = {p: at_rev(rev, p) for p in QUALITY_FILES}
    if found["metrics/eval.json"] is None:
        raise UserError(f"no metrics/eval.json committed at {rev!r}: nothing to gate against; commit a run's "
                        "metrics/ and dvc.lock there first")
    return found


def max_drop_at(rev: str) -> float:
    """``ci.max_accuracy_drop`` as params.yaml at ``rev`` sets it (the default when it has no ``ci`` section)."""
    raw = yaml.safe_load(show(rev, "params.yaml") or "") or {}
    return build(CIParams, raw.get("ci", {}) if isinstance(raw, dict) else {}, "ci.").max_accuracy_drop


def lock_outs(text: str | None) -> dict[str, str]:
    """``stage:path`` -> recorded hash of every output in a dvc.lock text."""
    stages = (yaml.safe_load(text or "") or {}).get("stages") or {}
    return {f"{name}:{out['path']}": str(out.get("md5") or out.get("etag") or out.get("checksum"))
            for name, stage in stages.items() for out in stage.get("outs") or []}


def check(base: dict[str, dict], current: dict[str, dict], max_drop: float,
          committed: dict[str, dict] | None = None) -> list[str]:
    """Reasons to fail (empty: pass). ``base``/``current``/``committed``: file -> flattened metrics.

    ``committed`` (HEAD's figures) turns on the exact check: every quality metric must equal it.
    """
    problems = []
    eval_base, eval_now = base.get("metrics/eval.json") or {}, current.get("metrics/eval.json") or {}
    for key in GATED:
        if key not in eval_now:
            problems.append(f"{key} missing from the workspace's metrics/eval.json")
            continue
        drop = eval_base.get(key, eval_now[key]) - eval_now[key]
        if drop > max_drop + 1e-12:
            problems.append(f"{key} dropped by {drop:.4f} ({eval_base[key]:.4f} -> {eval_now[key]:.4f}), more than "
                            f"ci.max_accuracy_drop = {max_drop:g}")
    if committed is not None:
        for path in QUALITY_FILES:
            b, c = committed.get(path), current.get(path)
            if b is None:
                continue
            changed = sorted(k for k in set(b) | set(c or {}) if (c or {}).get(k) != b.get(k))
            if changed:
                problems.append(f"{path} does not reproduce the committed figures: {_some(changed)}")
    return problems


def check_lock(committed: dict[str, str], current: dict[str, str]) -> list[str]:
    """Outputs whose hash in the workspace's dvc.lock differs from HEAD's (runtime figures excepted)."""
    changed = sorted(k for k in set(committed) | set(current)
                     if k.split(":", 1)[1] not in NOT_REPRODUCIBLE and committed.get(k) != current.get(k))
    return [f"dvc.lock: outputs differ from the committed run: {_some(changed)}"] if changed else []


def fingerprint_changes(committed: dict[str, Any] | None, current: dict[str, Any] | None) -> list[str]:
    """How the machine/software of the workspace's run differs from the committed run's (runtime.json)."""
    if not committed or not current:
        return []
    return [f"{k} {committed.get(k)!r} -> {current.get(k)!r}"
            for k in FINGERPRINT if committed.get(k) != current.get(k)]


def _some(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


def reproduce(dvc: str) -> None:
    """``dvc repro --force``: every stage runs, so no committed output is taken on trust (a clean clone holds
    the committed metrics files, and DVC would skip a stage whose deps and outs match dvc.lock)."""
    print("gate: dvc repro --force", flush=True)
    code = subprocess.run([dvc, "repro", "--force"], check=False, env={**os.environ, "DVC_NO_ANALYTICS": "1"},
                          stdout=sys.stdout, stderr=sys.stderr).returncode
    if code != 0:
        raise UserError(f"`dvc repro` failed (exit {code}): the committed pipeline does not reproduce; "
                        "see its output above")


def run_gate(base_rev: str, max_drop: float, exact: bool) -> tuple[list[str], list[str]]:
    """(reasons to fail, notes). With ``exact``, a run on other hardware or software than the committed run
    (see FINGERPRINT) is held to the accuracy drop only, and a note says why."""
    base = committed_at(base_rev)
    current = {p: in_workspace(p) for p in QUALITY_FILES}
    if current["metrics/eval.json"] is None:
        raise UserError("metrics/eval.json not found in the workspace; reproduce the pipeline first (dvc repro, "
                        "or handsigns gate --reproduce)")
    notes = []
    if exact:
        moved = fingerprint_changes(at_rev("HEAD", "metrics/runtime.json"), in_workspace("metrics/runtime.json"))
        if moved:
            notes.append(f"exact check not applicable: this run's machine or software differs from the committed "
                         f"run's ({_some(moved, 3)}), so its sums may differ in the last bits; only the accuracy "
                         "drop is gated")
            exact = False
    problems = check(base, current, max_drop, committed_at("HEAD") if exact else None)
    if exact:
        lock = Path("dvc.lock")
        problems += check_lock(lock_outs(show("HEAD", "dvc.lock")),
                               lock_outs(lock.read_text() if lock.exists() else None))
    return problems, notes
