"""The gate's rules in process, on hand-made metrics and dvc.lock texts (the CLI on git repos: test_gate.py)."""

import math

import yaml

from handsigns import gate

BASE = {"metrics/eval.json": {"val.accuracy": 0.99, "test.accuracy": 0.98}}


def evals(val: float, test: float) -> dict:
    return {"metrics/eval.json": {"val.accuracy": val, "test.accuracy": test}}


def test_drop_beyond_the_threshold_fails_and_gains_pass():
    assert gate.check_drop(BASE, evals(0.99, 0.975), 0.01) == []
    assert gate.check_drop(BASE, evals(1.0, 1.0), 0.0) == []
    (problem,) = gate.check_drop(BASE, evals(0.99, 0.95), 0.01)
    assert problem.startswith("test.accuracy dropped by 0.0300 (0.9800 -> 0.9500)")


def test_a_nan_or_missing_accuracy_fails():
    assert len(gate.check_drop(BASE, evals(math.nan, 0.98), 0.01)) == 1
    (problem,) = gate.check_drop(BASE, {"metrics/eval.json": {"val.accuracy": 0.99}}, 0.01)
    assert problem == "test.accuracy missing from the workspace's metrics/eval.json"


def test_same_means_every_quality_metric():
    committed = {"metrics/train.json": {"best_epoch": 7}, **BASE}
    assert gate.check_same(committed, committed) == []
    (problem,) = gate.check_same(committed, {**committed, "metrics/train.json": {"best_epoch": 8}})
    assert problem == "metrics/train.json does not reproduce the committed figures: best_epoch"


def test_close_holds_heads_accuracy_either_way():
    assert gate.check_close(BASE, evals(0.985, 0.975), 0.01) == []
    assert len(gate.check_close(BASE, evals(0.97, 0.98), 0.01)) == 1  # HEAD claims more than this run gives
    assert len(gate.check_close(evals(0.96, 0.98), BASE, 0.01)) == 1  # or less


def lock(**outs: str) -> str:
    stages = {
        "train": {
            "deps": [{"path": "src/handsigns/train.py", "md5": "aaa"}, {"path": "data/index"}],
            "params": {"params.yaml": {"lr": 0.003, "model": {"dropout": 0.3}}},
            "outs": [
                {"path": path.replace("__", "/").replace("_json", ".json"), "md5": md5} for path, md5 in outs.items()
            ],
        },
        "split": {"outs": [{"path": "data/index", "md5": "idx"}]},
    }
    return yaml.safe_dump({"schema": "2.0", "stages": stages})


def test_lock_inputs_are_code_and_params_not_made_outputs():
    found = gate.lock_inputs(lock(models__best="b1"))
    assert found == {
        "train:src/handsigns/train.py": "aaa",
        "train:params.yaml:lr": "0.003",
        "train:params.yaml:model.dropout": "0.3",
    }  # data/index is made by split: not an input


def test_lock_outs_ignore_only_the_runtime_files():
    head = gate.lock_outs(lock(models__best="b1", metrics__runtime_json="r1", metrics__fingerprint_json="f1"))
    same_but_timing = gate.lock_outs(
        lock(models__best="b1", metrics__runtime_json="r2", metrics__fingerprint_json="f2")
    )
    assert gate.check_lock_outs(head, same_but_timing) == []
    other_model = gate.lock_outs(lock(models__best="b2", metrics__runtime_json="r1", metrics__fingerprint_json="f1"))
    (problem,) = gate.check_lock_outs(head, other_model)
    assert "train:models/best" in problem


def test_fingerprint_changes_name_only_the_deciding_keys():
    committed = {"device": "cpu", "torch_threads": 2, "cpu_cores": 2, "platform": "Linux-6.1"}
    assert gate.fingerprint_changes(committed, {**committed, "cpu_cores": 64, "platform": "Linux-6.9"}) == []
    assert gate.fingerprint_changes(committed, {**committed, "torch_threads": 16}) == ["torch_threads 2 -> 16"]
    assert gate.fingerprint_changes(None, committed) == []  # nothing committed: the exact check stays strict
