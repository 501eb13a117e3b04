"""``handsigns gate``: the metric regression gate of CI.

Compares the workspace's quality metrics (after ``--reproduce``: a fresh ``dvc repro``) with committed ones:
fails when val or test accuracy dropped by more than ``ci.max_accuracy_drop`` against a base revision
(default ``main``), and with ``--exact`` when any quality metric differs at all from those committed at HEAD
(a reproduction of the committed pipeline on the same data must give the committed figures).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from handsigns.errors import UserError

QUALITY_FILES = ("metrics/data.json", "metrics/train.json", "metrics/eval.json")
GATED = ("val.accuracy", "test.accuracy")


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}


def at_rev(rev: str, path: str) -> dict[str, Any] | None:
    proc = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return None
    return flatten(json.loads(proc.stdout))


def in_workspace(path: str) -> dict[str, Any] | None:
    p = Path(path)
    return flatten(json.loads(p.read_text())) if p.exists() else None


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
                problems.append(f"{path} does not reproduce the committed figures: {', '.join(changed[:5])}"
                                + (f" and {len(changed) - 5} more" if len(changed) > 5 else ""))
    return problems


def committed_at(rev: str) -> dict[str, dict | None]:
    found = {p: at_rev(rev, p) for p in QUALITY_FILES}
    if found["metrics/eval.json"] is None:
        raise UserError(f"no metrics/eval.json committed at {rev!r}: nothing to gate against; commit a run's "
                        "metrics/ and dvc.lock there first")
    return found


def reproduce(dvc: str) -> None:
    """``dvc repro``, its output passed through; a failed reproduction fails the gate."""
    print("gate: dvc repro", flush=True)
    code = subprocess.run([dvc, "repro"], check=False, env={**os.environ, "DVC_NO_ANALYTICS": "1"},
                          stdout=sys.stdout, stderr=sys.stderr).returncode
    if code != 0:
        raise UserError(f"`dvc repro` failed (exit {code}): the committed pipeline does not reproduce; "
                        "see its output above")


def run_gate(base_rev: str, max_drop: float, exact: bool) -> list[str]:
    base = committed_at(base_rev)
    committed = committed_at("HEAD") if exact else None
    current = {p: in_workspace(p) for p in QUALITY_FILES}
    if current["metrics/eval.json"] is None:
        raise UserError("metrics/eval.json not found in the workspace; reproduce the pipeline first (dvc repro, "
                        "or handsigns gate --reproduce)")
    return check(base, current, max_drop, committed)
