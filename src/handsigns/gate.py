"""``handsigns gate``: the metric regression gate of CI, its checks and its I/O.

Two questions, each answered on the held-out images (val and test together), paired image by image:

- **Regression**: is the workspace's run worse than the base revision's committed run? It fails when held-out
  accuracy dropped by more than ``ci.max_accuracy_drop`` *and* a one-sided sign test on the images one run got
  right and the other wrong says noise loses that many less often than ``ci.significance``. Another machine, a
  thread count or bf16 against fp32 moves a run as much as another seed does; the test tells that apart from
  a real regression on a data set of any size. Both thresholds come from the base's params.yaml.
- **Reproduction** (``--exact``): does HEAD's committed run reproduce? HEAD's dvc.lock must record the code and
  params it was made from (``dvc status``). On the committed run's machine class (the fingerprint's deciding
  keys) every quality metric and output must come out byte for byte (``dvc metrics diff``; ``dvc diff`` for
  outputs in DVC's cache, ``git status`` for those git carries); elsewhere HEAD's committed figures are held to
  the same rule as a regression, two-sided.
- **Verification without retraining** (``--verify``): is the run HEAD commits, made on another machine (a GPU
  box) and pushed to the DVC remote, what its files say? Its outputs are pulled; dvc.lock must record HEAD's
  code and params and the pulled outputs' hashes; the evaluate stage re-runs on the pulled model and must give
  HEAD's committed predictions and metrics; the export check re-runs on the pulled ONNX model and weights.
  Nothing is trained, so a CPU runner checks a GPU run in a minute.

The rules and their measured basis: docs/comparing-runs.md, "The regression gate".
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import dataclass
from enum import Enum
from typing import Any

from handsigns.compare import read_predictions, table_or
from handsigns.errors import UserError
from handsigns.fingerprint import class_changes
from handsigns.params import load, parse_params
from handsigns.params.ci import CIParams
from handsigns.paths import (
    COMMITTED_OUTPUTS,
    EVAL_DETAILS,
    EVAL_METRICS,
    FINGERPRINT,
    QUALITY_METRICS,
    RUNTIME_FILES,
    posix,
)
from handsigns.vcs import changed_files, pull, reproduce, require_rev, run_dvc, show, text_at

QUALITY_FILES = posix(QUALITY_METRICS)
# Outputs that describe how a run went, not what it computed: their bytes differ from run to run or machine to
# machine (seconds; CPU model), so the byte-for-byte check leaves them out.
UNGATED_OUTS = posix(RUNTIME_FILES)
HELD_OUT = ("val", "test")  # the splits training never fits; val picks the epoch, so it is a little optimistic
# The evaluate stage scores in fp32 on the CPU: on another CPU its kernels move the loss and probabilities in
# their last bits, never by this much; a label must not move at all.
REDERIVED_TOLERANCE = 1e-4


def predictions_file(split: str) -> str:
    return (EVAL_DETAILS / f"predictions_{split}.csv").as_posix()


# ------------------------------------------------------------------------------------------------ statistics


def sign_test(lost: int, gained: int) -> float:
    """One-sided exact sign test (McNemar's exact test): the chance that, of ``lost + gained`` images on which two
    equally good runs disagree, the second run loses ``lost`` or more. Each disagreement goes either way with
    probability 1/2 when the runs are exchangeable, as two seeds or two machines are."""
    n = lost + gained
    return sum(math.comb(n, k) for k in range(lost, n + 1)) / 2**n if n else 1.0


@dataclass(frozen=True)
class Paired:
    """Two runs' predictions on the images both scored (same path, same label)."""

    images: int
    ref_right: int  # the reference run (the base's, or HEAD's committed one)
    run_right: int  # the workspace's run
    lost: int  # right in the reference, wrong in the run
    gained: int  # wrong in the reference, right in the run
    unpaired: int  # images only one of the two scored

    @property
    def change(self) -> float:
        """Held-out accuracy of the run minus the reference's, on the paired images."""
        return (self.run_right - self.ref_right) / self.images if self.images else 0.0

    def p_worse(self) -> float:
        return sign_test(self.lost, self.gained)

    def p_different(self) -> float:
        return min(1.0, 2 * min(sign_test(self.lost, self.gained), sign_test(self.gained, self.lost)))

    def describe(self, ref: str) -> str:
        if not self.images:
            return f"no held-out image in common with {ref}"
        acc = f"{self.ref_right / self.images:.4f} -> {self.run_right / self.images:.4f}"
        left = f"; {self.unpaired} scored by one run only, left out" if self.unpaired else ""
        return (
            f"held-out accuracy against {ref} {acc} on {self.images} paired images (val + test): "
            f"{self.lost} lost, {self.gained} gained{left}"
        )


def pair(ref: dict[str, tuple[str, str]], run: dict[str, tuple[str, str]]) -> Paired:
    """``ref``/``run``: image path -> (actual, predicted)."""
    common = [p for p in ref if p in run and ref[p][0] == run[p][0]]
    right = {p: (ref[p][0] == ref[p][1], run[p][0] == run[p][1]) for p in common}
    return Paired(
        images=len(common),
        ref_right=sum(r for r, _ in right.values()),
        run_right=sum(w for _, w in right.values()),
        lost=sum(r and not w for r, w in right.values()),
        gained=sum(w and not r for r, w in right.values()),
        unpaired=len(set(ref) | set(run)) - len(common),
    )


@dataclass(frozen=True)
class Rule:
    """``ci`` params: a held-out accuracy change fails only when it is both larger than ``max_drop`` and less
    likely than ``significance`` to be noise."""

    max_drop: float
    significance: float

    def regression(self, paired: Paired, base: str) -> list[str]:
        p = paired.p_worse()
        if paired.images and -paired.change > self.max_drop + 1e-12 and p < self.significance:
            return [
                f"{paired.describe(base)}: a drop of {-paired.change:.4f}, more than ci.max_accuracy_drop = "
                f"{self.max_drop:g}, and noise loses this many with p = {p:.2g}, below ci.significance = "
                f"{self.significance:g}"
            ]
        return []

    def reproduction(self, paired: Paired) -> list[str]:
        p = paired.p_different()
        if paired.images and abs(paired.change) > self.max_drop + 1e-12 and p < self.significance:
            return [
                f"HEAD's committed run is not reproduced on this machine: {paired.describe('it')}: "
                f"{abs(paired.change):.4f} apart, more than ci.max_accuracy_drop = {self.max_drop:g}, with "
                f"p = {p:.2g} (two-sided), below ci.significance = {self.significance:g}"
            ]
        return []


def rule_at(rev: str, max_drop: float | None = None) -> Rule:
    """The ``ci`` params of params.yaml at ``rev`` (defaults where it has no ``ci`` section): a change cannot
    loosen its own gate. ``max_drop`` overrides ``ci.max_accuracy_drop``."""
    ci = load(CIParams, raw=parse_params(show(rev, "params.yaml") or "", f"params.yaml at {rev}"))
    return Rule(ci.max_accuracy_drop if max_drop is None else max_drop, ci.significance)


# ---------------------------------------------------------------------------------------------------- I/O


def held_out_predictions(rev: str | None) -> dict[str, tuple[str, str]]:
    """Every held-out image's (actual, predicted) committed at ``rev``, or in the workspace (None)."""
    found: dict[str, tuple[str, str]] = {}
    for split in HELD_OUT:
        text = text_at(rev, predictions_file(split))
        if text is None:
            raise UserError(
                f"no {predictions_file(split)} committed at {rev!r}: nothing to gate against; commit a run's "
                "metrics/ and dvc.lock there first"
                if rev is not None
                else f"{predictions_file(split)} not found in the workspace; reproduce the pipeline first "
                "(dvc repro, or handsigns gate --reproduce)"
            )
        found.update(read_predictions(text))
    return found


def stale_lock(pulled: bool = False) -> list[str]:
    """Stage dependencies whose hash or value dvc.lock records is not the workspace's (``dvc status``): code,
    params, and outputs git carries. Outputs of earlier stages that are not there yet (a clean clone) are left
    out: the reproduction makes them. ``pulled``: every output is there, so any dependency or output that is
    not what dvc.lock records counts."""
    found = []
    for stage, entries in json.loads(run_dvc(["status", "--json"]) or "{}").items():
        for entry in entries:
            if isinstance(entry, str):  # the stage itself, e.g. "changed command"
                found.append(f"{stage} ({entry})")
                continue
            for kind in ("changed deps", "changed outs") if pulled else ("changed deps",):
                for path, state in (entry.get(kind) or {}).items():
                    if isinstance(state, dict):  # a params file: key -> modified / new / deleted
                        found += [f"{stage}:{path}:{key}" for key in state]
                    elif pulled or state != "deleted":
                        found.append(f"{stage}:{path} ({state})")
    return sorted(found)


def changed_metrics(rev: str) -> dict[str, list[str]]:
    """Quality metric file -> the metrics whose workspace value is not ``rev``'s (``dvc metrics diff``)."""
    diff = json.loads(run_dvc(["metrics", "diff", rev, "--json", "--targets", *QUALITY_FILES]) or "{}")
    return {path: sorted(metrics) for path, metrics in diff.items() if metrics}


def changed_outputs() -> list[str]:
    """Outputs that differ from HEAD's, runtime files aside: those in DVC's cache as ``dvc diff`` sees them
    (models, data), those git carries as ``git status`` does (``dvc diff`` skips ``cache: false`` outputs)."""
    diff = json.loads(run_dvc(["diff", "HEAD", "--json"]) or "{}")
    cached = [e["path"] for kind in ("added", "deleted", "modified") for e in diff.get(kind, [])]
    committed = changed_files([p for p in posix(COMMITTED_OUTPUTS) if p not in UNGATED_OUTS])
    return sorted({p for p in cached if not p.endswith("/")} | set(committed))


def fingerprint_at(rev: str | None) -> dict[str, Any] | None:
    """The committed run's fingerprint at ``rev``, or the workspace's run's (None)."""
    text = text_at(rev, FINGERPRINT.as_posix())
    return None if text is None else json.loads(text)


def fingerprint_changes(committed: dict[str, Any] | None, current: dict[str, Any] | None) -> list[str]:
    """How the machine/software of the workspace's run differs from the committed run's. Nothing committed to
    compare with: none, so the check stays byte for byte."""
    before, after = committed or {}, current or {}
    return [f"{k} {before.get(k)!r} -> {after.get(k)!r}" for k in class_changes(committed, current)]


def _some(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


# ---------------------------------------------------------------------------------------------------- run


def check_reproduction(rule: Rule, committed: dict[str, tuple[str, str]]) -> tuple[list[str], list[str]]:
    """(problems, notes) of the workspace's fresh run against HEAD's committed one (``committed``: its
    predictions)."""
    moved = fingerprint_changes(fingerprint_at("HEAD"), fingerprint_at(None))
    if moved:
        note = (
            f"not the committed run's machine class ({_some(moved, 3)}): its last bits differ, so HEAD's committed "
            "predictions are held to the regression rule, either way, instead of byte equality"
        )
        return rule.reproduction(pair(committed, held_out_predictions(None))), [note]
    problems = [
        f"{path} does not reproduce the committed figures: {_some(metrics)}"
        for path, metrics in changed_metrics("HEAD").items()
    ]
    outs = changed_outputs()
    if outs:
        problems.append(f"outputs differ from HEAD's committed run: {_some(outs)}")
    return problems, []


def check_rederived(committed: dict[str, tuple[str, str]]) -> tuple[list[str], list[str]]:
    """(problems, notes) of the evaluate stage re-run on a pulled model against HEAD's committed figures
    (``committed``: its predictions): the same label on every held-out image, every metric of the evaluation
    within REDERIVED_TOLERANCE."""
    problems = []
    rederived = held_out_predictions(None)
    moved = sorted(p for p in committed.keys() | rederived.keys() if committed.get(p) != rederived.get(p))
    if moved:
        problems.append(
            f"the pulled model scores {len(moved)} held-out images otherwise than HEAD's committed predictions "
            f"({_some(moved, 3)}): they were not made by this model"
        )
    target = EVAL_METRICS.as_posix()
    diff = json.loads(run_dvc(["metrics", "diff", "HEAD", "--json", "--targets", target]) or "{}").get(target, {})
    off = [
        f"{name} {d.get('old')} committed, {d.get('new')} re-derived"
        for name, d in sorted(diff.items())
        if d.get("diff") is None or abs(d["diff"]) > REDERIVED_TOLERANCE
    ]
    if off:
        problems.append(f"{target} does not hold what the pulled model scores: {_some(off)}")
    if problems:
        return problems, []
    exact = not changed_files(posix((EVAL_METRICS, EVAL_DETAILS)))
    return [], [
        "the evaluation re-derived from the pulled model "
        + ("byte for byte" if exact else f"within {REDERIVED_TOLERANCE:g} (another CPU's last bits)")
    ]


def check_export() -> list[str]:
    """Export's check re-run on the pulled ONNX model and weights against the pulled checkpoint; its problems."""
    proc = subprocess.run([sys.executable, "stages/export.py", "--check"], capture_output=True, text=True, check=False)
    print(proc.stdout, end="", flush=True)
    if proc.returncode == 0:
        return []
    return [(proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1].removeprefix("error: ")]


def verify_pulled(committed: dict[str, tuple[str, str]]) -> tuple[list[str], list[str]]:
    """(problems, notes) of HEAD's run as pulled from the DVC remote, with no training: its outputs are what
    dvc.lock records, the evaluation re-derives from its model, its export passes the export check."""
    fp = fingerprint_at("HEAD") or {}
    made_on = f"{fp.get('device_name', 'an unrecorded machine')}, {fp.get('precision', '?')}"
    print(f"gate: verifying HEAD's run (made on {made_on}) from the DVC remote, without training", flush=True)
    pull()
    problems = []
    mismatched = stale_lock(pulled=True)
    if mismatched:
        problems.append(f"the pulled run is not what dvc.lock at HEAD records: {_some(mismatched)}")
    reproduce(("evaluate",))
    found, notes = check_rederived(committed)
    return problems + found + check_export(), notes


class Mode(Enum):
    """Which run the gate holds to the regression rule, and what it checks besides: one of the combinations of
    ``--reproduce``, ``--exact`` and ``--verify`` the CLI accepts."""

    WORKSPACE = "workspace"  # the workspace's run as it is
    REPRODUCE = "reproduce"  # every stage re-run first
    EXACT = "exact"  # the workspace's run, and HEAD's committed run must reproduce in it
    REPRODUCE_EXACT = "reproduce-exact"  # both: what CI runs (make gate)
    VERIFY = "verify"  # HEAD's run pulled from the DVC remote and checked without training

    @property
    def reproduces(self) -> bool:
        return self in (Mode.REPRODUCE, Mode.REPRODUCE_EXACT)

    @property
    def exact(self) -> bool:
        return self in (Mode.EXACT, Mode.REPRODUCE_EXACT)


def run(base: str, max_drop: float | None, mode: Mode = Mode.WORKSPACE) -> int:
    """``handsigns gate``: print what it checked; 0 when it passes, 1 when it fails."""
    exact, verify = mode.exact, mode is Mode.VERIFY
    require_rev(base)
    rule = rule_at(base, max_drop)
    # Read before a long reproduction: a missing baseline is one error, at once.
    base_predictions = held_out_predictions(base)
    head_predictions = held_out_predictions("HEAD") if exact or verify else None
    problems: list[str] = []
    if exact:  # --verify checks the lock once its outputs are pulled
        stale = stale_lock()
        if stale:
            problems.append(
                f"dvc.lock at HEAD records other code, params or outputs than HEAD's own (was a run committed "
                f"after the last change?): {_some(stale)}"
            )
    notes: list[str] = []
    if verify:
        assert head_predictions is not None
        found, notes = verify_pulled(head_predictions)
        problems += found
    if mode.reproduces:
        reproduce()
    paired = pair(base_predictions, held_out_predictions(None))
    table = run_dvc(["metrics", "diff", base, "--md", "--targets", *QUALITY_FILES])
    print(table_or(table, f"dvc metrics diff {base}: no quality metric changed"))
    print(f"gate: {paired.describe(base)} (p = {paired.p_worse():.2g} that noise loses as many)")
    problems += rule.regression(paired, base)
    if exact and head_predictions is not None:
        found, notes = check_reproduction(rule, head_predictions)
        problems += found
    for note in notes:
        print(f"gate: note: {note}")
    for problem in problems:
        print(f"gate: FAIL: {problem}", file=sys.stderr)
    if problems:
        return 1
    if verify:
        held = " and HEAD's committed run verified from the DVC remote without training"
    elif exact:
        held = " and HEAD's committed run " + ("within noise" if notes else "reproduced exactly")
    else:
        held = ""
    print(
        f"gate: pass (no held-out accuracy drop beyond ci.max_accuracy_drop = {rule.max_drop:g} at "
        f"ci.significance = {rule.significance:g} against {base}{held})"
    )
    return 0
