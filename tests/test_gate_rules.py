"""The gate's rules in process, on hand-made predictions (the CLI on git repositories: test_gate.py)."""

import json
import math

import pytest

from handsigns import cli, gate

RULE = gate.Rule(max_drop=0.01, significance=0.01)


def preds(n: int, wrong: set[int] = frozenset(), label: str = "1") -> dict[str, tuple[str, str]]:
    """``n`` images of class ``label``, the ones in ``wrong`` predicted as another class."""
    return {f"img{i}.jpg": (label, "0" if i in wrong else label) for i in range(n)}


def test_sign_test_is_the_binomial_tail():
    assert gate.sign_test(0, 0) == 1.0
    assert gate.sign_test(4, 0) == 1 / 16
    assert gate.sign_test(2, 1) == 4 / 8  # P(X >= 2 | n = 3)
    assert math.isclose(gate.sign_test(14, 1), 16 / 2**15)
    assert gate.sign_test(0, 5) == 1.0


def test_pairing_counts_lost_and_gained_on_common_images_only():
    ref = preds(10, wrong={0, 1})
    run = {**preds(10, wrong={1, 2, 3}), "new.jpg": ("1", "1")}
    run["img9.jpg"] = ("2", "2")  # relabelled: not the same image any more
    paired = gate.pair(ref, run)
    assert (paired.images, paired.ref_right, paired.run_right) == (9, 7, 6)
    assert (paired.lost, paired.gained, paired.unpaired) == (2, 1, 2)
    assert paired.change == pytest.approx(-1 / 9)


def test_a_drop_like_another_seed_passes():
    # What two seeds of the default recipe do on SIGNS's 329 held-out images: a few images either way.
    paired = gate.pair(preds(329, wrong={0}), preds(329, wrong={1, 2, 3}))
    assert paired.change < -0.005 and paired.p_worse() > 0.1
    assert RULE.regression(paired, "main") == []


def test_a_real_regression_fails():
    # The 5-epoch branch: 14 images lost, 1 gained.
    paired = gate.pair(preds(329, wrong={0}), preds(329, wrong=set(range(1, 15))))
    (problem,) = RULE.regression(paired, "main")
    assert problem.startswith("held-out accuracy against main 0.9970 -> 0.9574 on 329 paired images")
    assert "14 lost, 1 gained" in problem and "p = 0.00049" in problem


def test_both_conditions_are_needed():
    small = gate.pair(preds(10_000), preds(10_000, wrong=set(range(50))))  # certain, but only 0.005
    assert small.p_worse() < 1e-10 and RULE.regression(small, "main") == []
    noisy = gate.pair(preds(100, wrong={0, 1}), preds(100, wrong={2, 3, 4, 5}))  # 0.02, but p = 0.34
    assert -noisy.change > 0.01 and RULE.regression(noisy, "main") == []
    assert gate.Rule(0.01, 0.5).regression(noisy, "main") != []


def test_gains_never_fail_the_regression_rule_but_do_fail_reproduction():
    better = gate.pair(preds(329, wrong=set(range(15))), preds(329))
    assert RULE.regression(better, "main") == []
    (problem,) = RULE.reproduction(better)  # HEAD claims less than its code gives: not its run
    assert problem.startswith("HEAD's committed run is not reproduced on this machine")
    worse = gate.pair(preds(329), preds(329, wrong=set(range(15))))
    assert RULE.reproduction(worse) != []
    assert RULE.reproduction(gate.pair(preds(329, wrong={7}), preds(329, wrong={8, 9}))) == []


def test_no_image_in_common_is_not_a_regression():
    paired = gate.pair(preds(10), {"other.jpg": ("1", "0")})
    assert paired.images == 0 and paired.unpaired == 11
    assert RULE.regression(paired, "main") == [] and RULE.reproduction(paired) == []
    assert paired.describe("main") == "no held-out image in common with main"


def test_fingerprint_changes_name_only_the_deciding_keys():
    committed = {"device": "cpu", "torch_threads": 2, "cpu_cores": 2, "platform": "Linux-6.1"}
    assert gate.fingerprint_changes(committed, {**committed, "cpu_cores": 64, "platform": "Linux-6.9"}) == []
    assert gate.fingerprint_changes(committed, {**committed, "torch_threads": 16}) == ["torch_threads 2 -> 16"]
    assert gate.fingerprint_changes(None, committed) == []  # nothing committed: the exact check stays strict


def test_stale_lock_names_changed_code_params_and_commands_not_missing_outputs(monkeypatch):
    # `dvc status --json` as DVC 3 prints it: a clean clone lacks data/index (made by split, not an input); a
    # params change, a code change and an edited command are stale records.
    status = {
        "split": [{"changed outs": {"data/index": "deleted"}}],
        "train": [{"changed deps": {"data/index": "deleted", "src/handsigns/train.py": "modified"}}],
        "evaluate": [{"changed deps": {"params.yaml": {"evaluate.batch_size": "modified"}}}, "changed command"],
    }
    monkeypatch.setattr(gate, "run_dvc", lambda args: json.dumps(status))
    assert gate.stale_lock() == [
        "evaluate (changed command)",
        "evaluate:params.yaml:evaluate.batch_size",
        "train:src/handsigns/train.py (modified)",
    ]


def test_stale_lock_after_a_pull_counts_every_output_and_dependency_not_as_recorded(monkeypatch):
    # Once every output was pulled, a missing or edited one is no longer a clean clone's gap but a mismatch.
    status = {
        "evaluate": [{"changed outs": {"metrics/eval.json": "modified"}}],
        "export": [{"changed deps": {"metrics/eval.json": "modified", "models/best.pt": "deleted"}}],
    }
    monkeypatch.setattr(gate, "run_dvc", lambda args: json.dumps(status))
    assert gate.stale_lock() == ["export:metrics/eval.json (modified)"]
    assert gate.stale_lock(pulled=True) == [
        "evaluate:metrics/eval.json (modified)",
        "export:metrics/eval.json (modified)",
        "export:models/best.pt (deleted)",
    ]


@pytest.mark.parametrize(
    ("flags", "mode"),
    [
        ([], gate.Mode.WORKSPACE),
        (["--reproduce"], gate.Mode.REPRODUCE),
        (["--exact"], gate.Mode.EXACT),
        (["--reproduce", "--exact"], gate.Mode.REPRODUCE_EXACT),
        (["--verify"], gate.Mode.VERIFY),
    ],
)
def test_each_accepted_combination_of_flags_is_one_mode(flags, mode):
    assert cli.gate_mode(cli.parser().parse_args(["gate", *flags])) is mode


@pytest.mark.parametrize("flags", [["--verify", "--exact"], ["--verify", "--reproduce"]])
def test_the_cli_refuses_the_combinations_no_mode_names(flags, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["gate", *flags])
    assert exit_.value.code == 2 and "--verify" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("mode", "steps"),
    [
        (gate.Mode.WORKSPACE, []),
        (gate.Mode.REPRODUCE, ["reproduce"]),
        (gate.Mode.EXACT, ["stale_lock", "check_reproduction"]),
        (gate.Mode.REPRODUCE_EXACT, ["stale_lock", "reproduce", "check_reproduction"]),
        (gate.Mode.VERIFY, ["verify_pulled"]),
    ],
)
def test_each_mode_runs_its_checks_in_order(monkeypatch, capsys, mode, steps):
    ran = []
    monkeypatch.setattr(gate, "require_rev", lambda rev: None)
    monkeypatch.setattr(gate, "rule_at", lambda rev, max_drop: RULE)
    monkeypatch.setattr(gate, "held_out_predictions", lambda rev: preds(10))
    monkeypatch.setattr(gate, "run_dvc", lambda args: "")
    monkeypatch.setattr(gate, "stale_lock", lambda: ran.append("stale_lock") or [])
    monkeypatch.setattr(gate, "reproduce", lambda: ran.append("reproduce"))
    monkeypatch.setattr(gate, "verify_pulled", lambda committed: ran.append("verify_pulled") or ([], []))
    monkeypatch.setattr(
        gate, "check_reproduction", lambda rule, committed: ran.append("check_reproduction") or ([], [])
    )
    assert gate.run("main", None, mode) == 0
    assert ran == steps
    assert "gate: pass" in capsys.readouterr().out
