"""``handsigns gate``: the metric regression gate of CI.

Holds the workspace's run to committed ones: val/test accuracy may not drop by more than
``ci.max_accuracy_drop`` against a base revision; with ``--exact`` the run must also reproduce what HEAD
commits (to the byte on the committed run's machine and software, else within the same threshold). The rules,
written once, with examples: docs/comparing-runs.md, "The regression gate".
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml

from handsigns.errors import UserError
from handsigns.params import load, parse_params
from handsigns.params.ci import CIParams
from handsigns.paths import EVAL_METRICS, FINGERPRINT, QUALITY_METRICS, RUNTIME_FILES, posix
from handsigns.runtime import DECIDING_KEYS
from handsigns.vcs import show

QUALITY_FILES = posix(QUALITY_METRICS)
EVAL_FILE, FINGERPRINT_FILE = EVAL_METRICS.as_posix(), FINGERPRINT.as_posix()
# Outputs that describe how a run went, not what it computed: their hashes differ from run to run or machine to
# machine (seconds; CPU model, kernel version), so the exact check leaves them out.
UNGATED_OUTS = posix(RUNTIME_FILES)
GATED = ("val.accuracy", "test.accuracy")


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}


def at_rev(rev: str, path: str) -> dict[str, Any] | None:
    text = show(rev, path)
    return None if text is None else flatten(json.loads(text))


def in_workspace(path: str) -> dict[str, Any] | None:
    p = Path(path)
    return flatten(json.loads(p.read_text())) if p.exists() else None


def committed_at(rev: str) -> dict[str, dict | None]:
    found = {p: at_rev(rev, p) for p in QUALITY_FILES}
    if found[EVAL_FILE] is None:
        raise UserError(
            f"no {EVAL_FILE} committed at {rev!r}: nothing to gate against; commit a run's "
            "metrics/ and dvc.lock there first"
        )
    return found


def max_drop_at(rev: str) -> float:
    """``ci.max_accuracy_drop`` as params.yaml at ``rev`` sets it (the default when it has no ``ci`` section)."""
    return load(CIParams, raw=parse_params(show(rev, "params.yaml") or "", f"params.yaml at {rev}")).max_accuracy_drop


# ------------------------------------------------------------------------------------------------ dvc.lock


def _stages(lock_text: str | None) -> dict[str, Any]:
    return (yaml.safe_load(lock_text or "") or {}).get("stages") or {}


def lock_outs(lock_text: str | None) -> dict[str, str]:
    """``stage:path`` -> recorded hash of every output."""
    return {
        f"{name}:{out['path']}": str(out.get("md5") or out.get("etag") or out.get("checksum"))
        for name, stage in _stages(lock_text).items()
        for out in stage.get("outs") or []
    }


def lock_inputs(lock_text: str | None) -> dict[str, str]:
    """What the recorded run was made from: ``stage:path`` -> hash of every dependency that no stage makes
    (code, params.yaml's files), and ``stage:file:key`` -> every param value."""
    stages = _stages(lock_text)
    made = {out["path"] for stage in stages.values() for out in stage.get("outs") or []}
    found = {}
    for name, stage in stages.items():
        for dep in stage.get("deps") or []:
            if dep["path"] not in made:
                found[f"{name}:{dep['path']}"] = str(dep.get("md5") or dep.get("etag") or dep.get("checksum"))
        for file, values in (stage.get("params") or {}).items():
            for key, value in flatten(values).items():
                found[f"{name}:{file}:{key}"] = json.dumps(value, sort_keys=True)
    return found


# ---------------------------------------------------------------------------------------------- checks


def check_drop(base: dict[str, dict | None], current: dict[str, dict | None], max_drop: float) -> list[str]:
    """Val/test accuracy of ``current`` against ``base`` (file -> flattened metrics)."""
    problems = []
    eval_base, eval_now = base.get(EVAL_FILE) or {}, current.get(EVAL_FILE) or {}
    for key in GATED:
        if key not in eval_now or key not in eval_base:
            where = "the workspace's" if key not in eval_now else "the base's"
            problems.append(f"{key} missing from {where} {EVAL_FILE}")
            continue
        drop = eval_base[key] - eval_now[key]
        if not drop <= max_drop + 1e-12:  # `not <=`: a NaN accuracy fails too
            problems.append(
                f"{key} dropped by {drop:.4f} ({eval_base[key]:.4f} -> {eval_now[key]:.4f}), more than "
                f"ci.max_accuracy_drop = {max_drop:g}"
            )
    return problems


def check_same(committed: dict[str, dict | None], current: dict[str, dict | None]) -> list[str]:
    """Every quality metric of ``current`` equals HEAD's."""
    problems = []
    for path in QUALITY_FILES:
        b, c = committed.get(path), current.get(path)
        if b is None:
            if c is not None:
                problems.append(f"{path} is not committed at HEAD; commit the run's metrics/ with its dvc.lock")
            continue
        changed = sorted(k for k in set(b) | set(c or {}) if (c or {}).get(k) != b.get(k))
        if changed:
            problems.append(f"{path} does not reproduce the committed figures: {_some(changed)}")
    return problems


def check_close(committed: dict[str, dict | None], current: dict[str, dict | None], tolerance: float) -> list[str]:
    """HEAD's val/test accuracy within ``tolerance`` of ``current``'s, either way (a run elsewhere)."""
    problems = []
    eval_head, eval_now = committed.get(EVAL_FILE) or {}, current.get(EVAL_FILE) or {}
    for key in GATED:
        head, now = eval_head.get(key, math.nan), eval_now.get(key, math.nan)
        if not abs(head - now) <= tolerance + 1e-12:
            problems.append(
                f"HEAD's committed {key} {head:.4f} is not reproduced: this run gives {now:.4f} "
                f"(allowed difference {tolerance:g} on other hardware or software)"
            )
    return problems


def check_lock_inputs(committed: dict[str, str], current: dict[str, str]) -> list[str]:
    """HEAD's dvc.lock records the code and params this run was made from."""
    changed = sorted(k for k in set(committed) | set(current) if committed.get(k) != current.get(k))
    return (
        [
            f"dvc.lock at HEAD records other code or params than HEAD's own (was a run committed after the last "
            f"change?): {_some(changed)}"
        ]
        if changed
        else []
    )


def check_lock_outs(committed: dict[str, str], current: dict[str, str]) -> list[str]:
    """Outputs whose hash in the workspace's dvc.lock differs from HEAD's (runtime files excepted)."""
    changed = sorted(
        k
        for k in set(committed) | set(current)
        if k.split(":", 1)[1] not in UNGATED_OUTS and committed.get(k) != current.get(k)
    )
    return [f"dvc.lock: outputs differ from the committed run: {_some(changed)}"] if changed else []


def fingerprint_changes(committed: dict[str, Any] | None, current: dict[str, Any] | None) -> list[str]:
    """How the machine/software of the workspace's run differs from the committed run's (fingerprint.json)."""
    if not committed or not current:
        return []
    return [
        f"{k} {committed.get(k)!r} -> {current.get(k)!r}" for k in DECIDING_KEYS if committed.get(k) != current.get(k)
    ]


def _some(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


# ------------------------------------------------------------------------------------------------- run


def run_gate(
    base: dict[str, dict | None], committed: dict[str, dict | None] | None, max_drop: float
) -> tuple[list[str], list[str]]:
    """(reasons to fail, notes) for the workspace's run. ``base``: :func:`committed_at` of the base revision;
    ``committed``: that of HEAD, for the exact check (None: no exact check)."""
    current = {p: in_workspace(p) for p in QUALITY_FILES}
    if current[EVAL_FILE] is None:
        raise UserError(
            f"{EVAL_FILE} not found in the workspace; reproduce the pipeline first (dvc repro, "
            "or handsigns gate --reproduce)"
        )
    problems, notes = check_drop(base, current, max_drop), []
    if committed is not None:
        head_lock = show("HEAD", "dvc.lock")
        work_lock = Path("dvc.lock").read_text() if Path("dvc.lock").exists() else None
        problems += check_lock_inputs(lock_inputs(head_lock), lock_inputs(work_lock))
        moved = fingerprint_changes(at_rev("HEAD", FINGERPRINT_FILE), in_workspace(FINGERPRINT_FILE))
        if moved:
            notes.append(
                f"not the committed run's machine or software ({_some(moved, 3)}): its last bits may "
                f"differ, so HEAD's val/test accuracy is held to within {max_drop:g} of this run instead "
                "of byte equality"
            )
            problems += check_close(committed, current, max_drop)
        else:
            problems += check_same(committed, current) + check_lock_outs(lock_outs(head_lock), lock_outs(work_lock))
    return problems, notes
