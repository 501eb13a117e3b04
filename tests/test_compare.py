"""`handsigns compare` on two revisions of a temporary DVC repository."""

import json
import sys

import pytest

from conftest import make_project, run

pytestmark = pytest.mark.slow  # DVC subprocesses on a git repository


def _write_metrics(repo, test_acc: float, seconds: float, cpu: str = "AMD EPYC") -> None:
    (repo / "metrics/train/plots/metrics/val").mkdir(parents=True, exist_ok=True)
    (repo / "metrics/train/plots/metrics/val/accuracy.tsv").write_text(f"step\taccuracy\n1\t0.5\n2\t{test_acc}\n")
    (repo / "metrics/eval.json").write_text(json.dumps({"test": {"accuracy": test_acc}, "val": {"accuracy": 0.9}}))
    (repo / "metrics/runtime.json").write_text(json.dumps({"train_seconds": seconds}))
    (repo / "metrics/fingerprint.json").write_text(json.dumps({"device_name": cpu, "torch_threads": 2}))


def test_compare_reports_params_metrics_and_plots(tmp_path):
    repo = make_project(tmp_path / "repo", {"source": "unused.zip"}, git=True)
    _write_metrics(repo, 0.95, 100.0)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "base run"], repo)
    _write_metrics(repo, 0.97, 80.0, cpu="Intel Xeon")
    params = (repo / "params.yaml").read_text().replace("lr: 0.003", "lr: 0.01")
    (repo / "params.yaml").write_text(params)

    proc = run([sys.executable, "-m", "handsigns.cli", "compare", "--base", "HEAD", "--out", "out/report.md"], repo)
    text = (repo / "out/report.md").read_text()
    assert text == proc.stdout
    params_part = text.split("## Params")[1].split("##")[0]
    assert "lr" in params_part and "0.003" in params_part and "0.01" in params_part
    quality = text.split("## Quality metrics")[1].split("##")[0]
    assert "test.accuracy" in quality and "0.95" in quality and "0.97" in quality and "0.02" in quality
    assert "val.accuracy" not in quality  # unchanged metrics are left out
    runtime = text.split("## Runtime")[1].split("##")[0]
    assert "train_seconds" in runtime and "-20" in runtime
    # The machine fingerprint is not a DVC metric (no column in `dvc exp show`), yet the report shows it.
    assert "device_name" in runtime and "AMD EPYC" in runtime and "Intel Xeon" in runtime
    assert (repo / "out/report_plots/index.html").exists()
    assert "report_plots/index.html" in text


def test_compare_with_an_unknown_base_is_one_clear_error(tmp_path):
    repo = make_project(tmp_path / "repo", {"source": "unused.zip"}, git=True)
    proc = run([sys.executable, "-m", "handsigns.cli", "compare", "--base", "no-such-branch"], repo, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "error: git revision 'no-such-branch' not found; pass --base with a branch, tag or commit"
    )
